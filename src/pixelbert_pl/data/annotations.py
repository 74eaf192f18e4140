"""Annotation files in their published formats, checked as they are read: every format surprise is an
`AnnotationError` naming the file, the entry and the field and recalling the expected format; images whose file does
not exist are a `FileNotFoundError` naming them, or skipped and counted with `allow_missing` (docs/prior_art.md L16).

Every reader of the package (captions.py, vqa.py, nlvr2.py, classification.py, shards.py) reads through these.
"""

from __future__ import annotations

import json
import logging
import os
import reprlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
RecordT = TypeVar("RecordT")


class AnnotationError(ValueError):
    """An annotation file that does not match its published format; the message names file, entry and field."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON `true` is never a valid id


_KINDS = {
    "object": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "str": lambda v: isinstance(v, str),
    "int": _is_int,
    "int or null": lambda v: v is None or _is_int(v),
    "int or str": lambda v: isinstance(v, str) or _is_int(v),
}
_JSON_NAMES = {dict: "object", list: "list", str: "str", int: "int", float: "float", bool: "bool", type(None): "null"}
_REQUIRED = object()


class AnnotationFile:
    """Loads one JSON file and reads its fields, turning every format surprise into an AnnotationError that names
    the file, the entry and the field and recalls the expected format."""

    def __init__(self, path: PathLike, expected: str) -> None:
        self.path = Path(path)
        self.expected = expected

    def load(self, kind: str) -> Any:
        """The whole file as one JSON value of `kind`."""
        return self.check(self._decode(self._text(), 0), kind, "")

    def load_lines(self, kind: str) -> list[tuple[int, Any]]:
        """JSON lines (NLVR2): (line number, value of `kind`) for each non-blank line; errors say "line N"."""
        # Not splitlines(): it also splits at U+2028 and other separators that JSON strings may hold unescaped.
        lines = enumerate(self._text().split("\n"), 1)
        return [(n, self.check(self._decode(line, n - 1), kind, f"line {n}")) for n, line in lines if line.strip()]

    def _text(self) -> str:
        if not self.path.is_file():
            raise FileNotFoundError(f"annotation file not found: {self.path}")
        try:
            return self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise AnnotationError(f"{self.path}: not UTF-8 text (byte {e.start}); is it really a JSON file?") from e

    def _decode(self, text: str, lines_before: int) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            line = lines_before + e.lineno
            raise AnnotationError(f"{self.path}: invalid JSON at line {line}, column {e.colno}: {e.msg}") from e

    def error(self, where: str, problem: str) -> AnnotationError:
        return AnnotationError(f"{self.path}: {where or 'top level'} {problem} (expected {self.expected})")

    def check(self, value: Any, kind: str, where: str) -> Any:
        if not _KINDS[kind](value):
            found = f"{_JSON_NAMES.get(type(value), type(value).__name__)} {reprlib.repr(value)}"
            raise self.error(where, f"is {found}, should be {kind}")
        return value

    def field(self, entry: Any, keys: str | tuple[str, ...], kind: str, where: str, default: Any = _REQUIRED) -> Any:
        """`entry[key]` for the first of `keys` present, checked to be of `kind`; `default` when none is present."""
        self.check(entry, "object", where)
        keys = (keys,) if isinstance(keys, str) else keys
        for key in keys:
            if key in entry:
                return self.check(entry[key], kind, f"{where}.{key}" if where else key)
        if default is not _REQUIRED:
            return default
        raise self.error(where, "has no field " + " or ".join(f"'{k}'" for k in keys))


class UniqueField:
    """Checks that no two entries of a file share a value of one field; a repeat raises an AnnotationError naming
    both entries and the value. Keeps each value's first position (an int): these files hold millions of entries.

    Args:
        ann: the file the entries come from.
        field: the field's name as the message says it ("cocoid", "question_id").
        both: the two entries, filled with the first and the repeating position ("images[{}] and images[{}]").
    """

    def __init__(self, ann: AnnotationFile, field: str, both: str = "images[{}] and images[{}]") -> None:
        self.ann, self.field, self.both = ann, field, both
        self.first: dict[Any, int] = {}

    def add(self, value: Any, position: int) -> None:
        first = self.first.setdefault(value, position)
        if first != position:
            raise self.ann.error(
                self.both.format(first, position), f"have the same {self.field} {value!r}; each may occur only once"
            )


class DirectoryIndex:
    """File names per directory, each directory listed once: a stat per image is very slow for 100K+ images on
    network file systems."""

    def __init__(self) -> None:
        self._names: dict[Path, frozenset[str]] = {}

    def has(self, path: Path) -> bool:
        if path.parent not in self._names:
            try:
                with os.scandir(path.parent) as entries:
                    self._names[path.parent] = frozenset(entry.name for entry in entries)
            except (FileNotFoundError, NotADirectoryError):
                self._names[path.parent] = frozenset()
        return path.name in self._names[path.parent]

    def first_missing(self, *paths: PathLike) -> str | None:
        """The first of `paths` that is not a file in its directory, or None when all are."""
        return next(iter(self.absent(*paths)), None)

    def absent(self, *paths: PathLike) -> tuple[str, ...]:
        """Those of `paths` that are not files in their directories."""
        return tuple(str(p) for p in paths if not self.has(Path(p)))


def absolute_path(path: PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def drop_missing(
    records: list[RecordT],
    missing: Sequence[str | Sequence[str] | None],
    source: Path,
    searched: Iterable[Path],
    allow_missing: bool,
    *,
    images: Sequence[Sequence[str]] | None = None,
    noun: str = "record",
) -> list[RecordT]:
    """`records` whose image files all exist, where `missing[i]` is record i's absent file or files (None: none is).

    `images[i]` are all of record i's image files (default: each record has one image of its own), so that the
    message counts and names distinct files however many records (`noun`, e.g. "question") share one. Raises
    FileNotFoundError naming the first absent files, unless `allow_missing` (then a warning counts them)."""
    absent_of = [(m,) if isinstance(m, str) else tuple(m or ()) for m in missing]
    absent = list(dict.fromkeys(path for paths in absent_of for path in paths))  # distinct, in record order
    if not absent:
        return records
    total = len(records) if images is None else len({path for paths in images for path in paths})
    hit = sum(1 for paths in absent_of if paths)
    where = ", ".join(sorted({str(d) for d in searched}))
    message = (
        f"{len(absent)} of {total} images (referenced by {hit} {noun}{'s' * (hit != 1)}) from {source} have no file "
        f"(looked in {where}); first: " + ", ".join(absent[:5])
    )
    if not allow_missing:
        # The DataModules pass their own `allow_missing` argument down here, so a config can say it too.
        raise FileNotFoundError(message + ". Pass allow_missing=True (a config: data.init_args.allow_missing: true) "
                                "to skip them, with a warning.")  # fmt: skip
    logger.warning("%s. Skipping those %d %s%s (allow_missing=True).", message, hit, noun, "s" * (hit != 1))
    return [r for r, paths in zip(records, absent_of, strict=True) if not paths]
