"""The Lightning tasks a checkpoint's hyper-parameters may name (LightningCLI's `_class_path`): the package's own, and
the subclasses a user registers. `pixelbert fit / validate --ckpt_path` looks the name up here to check it against
the configured task, and never imports what the file says. A new benchmark's task joins explicitly:

    @register_task
    class ShapePresenceTask(PixelBertTask): ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from pixelbert_pl.models.registry import Registry

if TYPE_CHECKING:
    from pixelbert_pl.tasks.base import PixelBertTask

TaskT = TypeVar("TaskT", bound="type[PixelBertTask]")
_TASKS: Registry[type[PixelBertTask]] = Registry("task", "pixelbert_pl.tasks.register_task")


def register_task(cls: TaskT, *aliases: str) -> TaskT:
    """Register a task class under its name, its `module.qualname` (what LightningCLI stores as `_class_path`) and
    `aliases` (e.g. the package path it is exported under). Returns the class, so it works as a decorator."""
    return _TASKS.register(cls, f"{cls.__module__}.{cls.__qualname__}", *aliases)


def get_task(name: str, source: str = "") -> type[PixelBertTask]:
    """The registered task called `name`; `source` (the file that named it) is for the error message."""
    return _TASKS.get(name, source)


def list_tasks() -> list[str]:
    return _TASKS.names()
