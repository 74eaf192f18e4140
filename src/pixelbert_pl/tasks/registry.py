"""The tasks a checkpoint or an exported directory may name: the package's own, and the subclasses a user registers.

Loading looks a task up here by name and never imports what a file says, so a downloaded `config.json` or a
checkpoint's hyper-parameters cannot make the loader run code (HF's `AutoModel.register` / timm's `register_model`
habit). A new benchmark's task joins explicitly:

    @register_task
    class VisualEntailmentTask(PixelBertTask): ...

and its module must be imported before its checkpoints are loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from pixelbert_pl.tasks.base import PixelBertTask

TaskT = TypeVar("TaskT", bound="type[PixelBertTask]")
_TASKS: dict[str, type[PixelBertTask]] = {}  # by name and by each alias


def register_task(cls: TaskT, *aliases: str) -> TaskT:
    """Register a task class under its name, its `module.qualname` (what LightningCLI stores as `_class_path`) and
    `aliases` (e.g. the package path it is exported under). Returns the class, so it works as a decorator."""
    names = {cls.__name__, f"{cls.__module__}.{cls.__qualname__}", *aliases}
    for name in names:
        other = _TASKS.get(name)
        if other is not None and other is not cls:
            raise ValueError(f"task name {name!r} is taken by {other.__module__}.{other.__qualname__}")
    for name in names:
        _TASKS[name] = cls
    return cls


def get_task(name: str, source: str = "") -> type[PixelBertTask]:
    """The registered task called `name`; `source` (the file that named it) is for the error message."""
    task = _TASKS.get(name)
    if task is None:
        where = f"{source}: " if source else ""
        raise ValueError(
            f"{where}task {name!r} is not a registered task ({', '.join(list_tasks())}); a task of your own must be "
            "registered with pixelbert_pl.tasks.register_task, and its module imported, before loading"
        )
    return task


def task_name(cls: type[PixelBertTask]) -> str:
    """The name an export records for `cls` (its class name), checked to resolve back to it."""
    if _TASKS.get(cls.__name__) is not cls:
        raise ValueError(
            f"{cls.__module__}.{cls.__qualname__} is not a registered task: decorate it with "
            "pixelbert_pl.tasks.register_task so that its exports and checkpoints can be loaded"
        )
    return cls.__name__


def list_tasks() -> list[str]:
    return sorted({cls.__name__ for cls in _TASKS.values()})
