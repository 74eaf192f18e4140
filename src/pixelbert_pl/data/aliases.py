"""The class paths DataModules had before `pixelbert_pl.data` exported them, kept for one release: a recipe naming
`pixelbert_pl.data.downstream.VQADataModule` still loads, with a FutureWarning giving the new path."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any


def moved_names(module: str, names: Sequence[str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `module` that hands out `pixelbert_pl.data.<name>` for each of `names`."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} is now pixelbert_pl.data.{name}; the old path will be removed in the next release",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("pixelbert_pl.data"), name)

    return __getattr__
