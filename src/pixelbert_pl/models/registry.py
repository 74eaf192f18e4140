"""`Registry`: classes by name, so that loading looks a name a file holds up here and never imports it (HF's
`AutoModel.register` / timm's `register_model` habit). The task models (`models/task_model.py`) and the Lightning
tasks (`tasks/registry.py`) each keep one."""

from __future__ import annotations

from typing import Generic, TypeVar, cast

T = TypeVar("T", bound=type)
S = TypeVar("S", bound=type)  # a subclass of what a registry holds: `register` returns it as given


class Registry(Generic[T]):
    """A registry of classes by name.

    Args:
        kind: what it holds, for messages ("task model").
        register: the call that registers one.
    """

    def __init__(self, kind: str, register: str) -> None:
        self.kind, self.register_call = kind, register
        self._classes: dict[str, T] = {}

    def register(self, cls: S, *names: str) -> S:
        """Register `cls` under its class name and `names`; a name taken by another class is an error."""
        names = (cls.__name__, *names)
        for name in names:
            other = self._classes.get(name)
            if other is not None and other is not cls:
                raise ValueError(f"{self.kind} name {name!r} is taken by {other.__module__}.{other.__qualname__}")
        self._classes.update(dict.fromkeys(names, cast(T, cls)))
        return cls

    def get(self, name: str, source: str = "") -> T:
        """The class registered as `name`; `source` (the file that named it) is for the error message."""
        found = self._classes.get(name)
        if found is None:
            where = f"{source}: " if source else ""
            raise ValueError(
                f"{where}{self.kind} {name!r} is not registered ({', '.join(self.names())}); a {self.kind} of your own "
                f"must be registered with {self.register_call}, and its module imported, before loading"
            )
        return found

    def name_of(self, cls: type) -> str:
        """The name a saved file records for `cls` (its class name), checked to resolve back to it."""
        if self._classes.get(cls.__name__) is not cls:
            raise ValueError(f"{cls.__module__}.{cls.__qualname__} is not a registered {self.kind}: decorate it with "
                             f"{self.register_call} so that what it saves can be loaded")  # fmt: skip
        return cls.__name__

    def names(self) -> list[str]:
        return sorted({cls.__name__ for cls in self._classes.values()})
