"""Caption corpora for pre-training (docs/paper_facts.md §2.1, §7.1-7.3): raw COCO captions, the Karpathy splits and
Visual Genome region descriptions, read into one record type, `ImageCaptions`, and handed on to Hugging Face `datasets`.

Pre-training must never see evaluation images (docs/prior_art.md L4): take COCO through
`read_karpathy(..., splits=PRETRAIN_SPLITS)` and pass `karpathy_coco_ids(...)` (val + test) to `read_visual_genome`.

Readers fail loudly (docs/prior_art.md L16). A malformed file raises `AnnotationError` naming the file, the entry and
the field. Images whose file does not exist raise `FileNotFoundError`; with `allow_missing=True` they are skipped
instead and the count is logged as a warning on this module's logger, so the return type is always a plain
`list[ImageCaptions]`.
"""

from __future__ import annotations

import json
import logging
import os
import reprlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
RecordT = TypeVar("RecordT")

PRETRAIN_SPLITS = ("train", "restval")
EVAL_SPLITS = ("val", "test")

COCO_FORMAT = "COCO captions format: {images: [{id, file_name, ...}], annotations: [{image_id, caption, ...}]}"
KARPATHY_FORMAT = "Karpathy format: {dataset, images: [{filepath?, filename, split, cocoid?, sentences: [{raw}]}]}"
VG_IMAGES_FORMAT = "Visual Genome image_data.json format: [{image_id or id, coco_id, flickr_id, ...}]"
VG_REGIONS_FORMAT = "Visual Genome region_descriptions.json format: [{id or image_id, regions: [{image_id, phrase}]}]"

CAPTION_COLUMNS = ("image_id", "image_path", "captions", "source")


def caption_features() -> datasets.Features:
    """The Arrow schema of caption records. `datasets` is imported here, not at module import, so the models and
    tasks load where only torch is installed (a GPU box, an inference server)."""
    import datasets

    string = datasets.Value("string")
    return datasets.Features(
        {"image_id": string, "image_path": string, "captions": datasets.List(string), "source": string}
    )


class AnnotationError(ValueError):
    """An annotation file that does not match its published format; the message names file, entry and field."""


@dataclass
class ImageCaptions:
    """One image with all its captions. `image_id` is namespaced by corpus ("coco:391895", "vg:1",
    "flickr30k:1000092795.jpg") so ids of different corpora never collide; `image_path` is absolute."""

    image_id: str
    image_path: str
    captions: list[str]
    source: str


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


def _clean(captions: Iterable[str]) -> list[str]:
    # Raw COCO captions carry stray spaces and newlines; an empty caption would become a text of only [CLS] [SEP].
    return [c for c in (caption.strip() for caption in captions) if c]


def _log_dropped_empty(path: Path, raw: int, kept: int) -> None:
    if raw > kept:
        logger.warning("%s: %d empty caption(s) dropped (of %d)", path, raw - kept, raw)


def read_coco_captions(
    annotation_file: PathLike, image_dir: PathLike, *, allow_missing: bool = False
) -> list[ImageCaptions]:
    """Images with their captions from `captions_{train,val}2014.json`, in `images[]` order. Use `read_karpathy`
    for pre-training: the raw files do not say which images Karpathy reserves for val/test."""
    ann = AnnotationFile(annotation_file, COCO_FORMAT)
    data = ann.load("object")
    file_names: dict[int, str] = {}
    ids = UniqueField(ann, "id")
    for i, image in enumerate(ann.field(data, "images", "list", "")):
        image_id = ann.field(image, "id", "int", f"images[{i}]")
        ids.add(image_id, i)
        file_names[image_id] = ann.field(image, "file_name", "str", f"images[{i}]")
    captions: dict[int, list[str]] = {image_id: [] for image_id in file_names}
    for i, annotation in enumerate(ann.field(data, "annotations", "list", "")):
        image_id = ann.field(annotation, "image_id", "int", f"annotations[{i}]")
        caption = ann.field(annotation, "caption", "str", f"annotations[{i}]")
        if image_id not in captions:
            raise ann.error(f"annotations[{i}].image_id", f"is {image_id}, which is not the id of any entry in images")
        captions[image_id].append(caption)
    image_dir = absolute_path(image_dir)
    records = [
        ImageCaptions(f"coco:{image_id}", str(image_dir / file_names[image_id]), _clean(texts), "coco")
        for image_id, texts in captions.items()
    ]
    _log_dropped_empty(ann.path, sum(map(len, captions.values())), sum(len(r.captions) for r in records))
    records = [r for r in records if r.captions]
    index = DirectoryIndex()
    missing = [index.first_missing(r.image_path) for r in records]
    return drop_missing(records, missing, ann.path, [image_dir], allow_missing)


def _karpathy_images(
    split_file: PathLike, splits: Sequence[str]
) -> tuple[AnnotationFile, dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The file, its top level, and (position, entry) for each image whose split is in `splits`. Every image of the
    file is checked for a repeated `filename` or `cocoid`: a repeat across splits would leak evaluation images."""
    wanted = {splits} if isinstance(splits, str) else set(splits)
    ann = AnnotationFile(split_file, KARPATHY_FORMAT)
    data = ann.load("object")
    chosen: list[tuple[str, dict[str, Any]]] = []
    present: set[str] = set()
    filenames, cocoids = UniqueField(ann, "filename"), UniqueField(ann, "cocoid")
    for i, image in enumerate(ann.field(data, "images", "list", "")):
        split = ann.field(image, "split", "str", f"images[{i}]")
        filenames.add(ann.field(image, "filename", "str", f"images[{i}]"), i)
        if (cocoid := ann.field(image, "cocoid", "int", f"images[{i}]", default=None)) is not None:
            cocoids.add(cocoid, i)
        present.add(split)
        if split in wanted:
            chosen.append((f"images[{i}]", image))
    if wanted - present:
        # A typo such as "trian" would otherwise just make the corpus smaller.
        raise ValueError(
            f"{ann.path}: no images in split(s) {sorted(wanted - present)}; splits present: {sorted(present)}"
        )
    return ann, data, chosen


def read_karpathy(
    split_file: PathLike, image_root: PathLike, splits: Sequence[str], *, allow_missing: bool = False
) -> list[ImageCaptions]:
    """Images of `splits` (pre-training: `PRETRAIN_SPLITS`) from `dataset_coco.json` / `dataset_flickr30k.json`.

    Files are `image_root/filepath/filename` (COCO: image_root holds train2014/ and val2014/) or
    `image_root/filename` when there is no `filepath` (Flickr30K: image_root is flickr30k-images/). Ids are
    "coco:{cocoid}", matching `read_coco_captions`, else "{dataset}:{filename}".

    An image without a non-empty sentence is dropped with a counted warning in a training split (`PRETRAIN_SPLITS`:
    train, restval) and is an AnnotationError in any other split (val, test, ...), whose size is a published number."""
    ann, data, chosen = _karpathy_images(split_file, splits)
    dataset = ann.field(data, "dataset", "str", "")
    root = absolute_path(image_root)
    records: list[ImageCaptions] = []
    dropped: list[str] = []  # training images without a caption, as "images[i] (filename)"
    raw_count = 0
    for where, image in chosen:
        filename = ann.field(image, "filename", "str", where)
        path = root / ann.field(image, "filepath", "str", where, default="") / filename
        cocoid = ann.field(image, "cocoid", "int", where, default=None)
        image_id = f"coco:{cocoid}" if cocoid is not None else f"{dataset}:{filename}"
        sentences = ann.field(image, "sentences", "list", where)
        raw = [ann.field(s, "raw", "str", f"{where}.sentences[{j}]") for j, s in enumerate(sentences)]
        raw_count += len(raw)
        if captions := _clean(raw):
            records.append(ImageCaptions(image_id, str(path), captions, dataset))
            continue
        split = image["split"]
        if split not in PRETRAIN_SPLITS:
            raise ann.error(
                where, f"({filename}, split {split!r}) has no non-empty sentence; every image of an evaluation split "
                "needs one, or the split (e.g. the 5K test) would silently shrink"
            )  # fmt: skip
        dropped.append(f"{where} ({filename})")
    if dropped:
        logger.warning(
            "%s: %d training image(s) without a non-empty sentence dropped; first: %s",
            ann.path, len(dropped), ", ".join(dropped[:5]),
        )  # fmt: skip
    _log_dropped_empty(ann.path, raw_count, sum(len(r.captions) for r in records))
    index = DirectoryIndex()
    missing = [index.first_missing(r.image_path) for r in records]
    return drop_missing(records, missing, ann.path, {Path(r.image_path).parent for r in records}, allow_missing)


def karpathy_coco_ids(split_file: PathLike, splits: Sequence[str] = EVAL_SPLITS) -> set[int]:
    """The `cocoid` of every image in `splits` of `dataset_coco.json`: what `read_visual_genome` must exclude."""
    ann, _, chosen = _karpathy_images(split_file, splits)
    return {ann.field(image, "cocoid", "int", where) for where, image in chosen}


def karpathy_flickr_ids(split_file: PathLike, splits: Sequence[str] = EVAL_SPLITS) -> set[int]:
    """Flickr photo ids (file name stems) of `splits` of `dataset_flickr30k.json`, to compare with VG's `flickr_id`."""
    ann, _, chosen = _karpathy_images(split_file, splits)
    ids: set[int] = set()
    for where, image in chosen:
        stem = Path(ann.field(image, "filename", "str", where)).stem
        if not stem.isdigit():
            raise ann.error(f"{where}.filename", f"has stem {stem!r}, which is not a Flickr photo id")
        ids.add(int(stem))
    return ids


def read_visual_genome(
    region_file: PathLike,
    image_data_file: PathLike,
    image_dirs: Sequence[PathLike],
    exclude_coco_ids: Collection[int] = frozenset(),
    exclude_flickr_ids: Collection[int] = frozenset(),
    *,
    allow_missing: bool = False,
) -> list[ImageCaptions]:
    """Each VG image with its region phrases as whole-image captions (stripped, empty ones dropped, exact repeats
    kept once), id "vg:{image_id}", file `<dir>/<image_id>.jpg` in the first of `image_dirs` holding it.

    Images whose `coco_id` is in `exclude_coco_ids` or whose `flickr_id` is in `exclude_flickr_ids` are dropped
    before their files are looked for; `coco_id` / `flickr_id` must be present (null is fine) so a dump lacking them
    cannot leak evaluation images silently."""
    dirs = [absolute_path(d) for d in ([image_dirs] if isinstance(image_dirs, str | os.PathLike) else image_dirs)]
    if not dirs:
        raise ValueError("read_visual_genome: image_dirs is empty; pass e.g. [VG_100K, VG_100K_2]")
    meta = AnnotationFile(image_data_file, VG_IMAGES_FORMAT)
    links: dict[int, tuple[int | None, int | None]] = {}
    image_ids = UniqueField(meta, "image id", "[{}] and [{}]")
    for i, image in enumerate(meta.load("list")):
        image_id = meta.field(image, ("image_id", "id"), "int", f"[{i}]")
        image_ids.add(image_id, i)
        coco_id = meta.field(image, "coco_id", "int or null", f"[{i}]")
        links[image_id] = (coco_id, meta.field(image, "flickr_id", "int or null", f"[{i}]"))

    ann = AnnotationFile(region_file, VG_REGIONS_FORMAT)
    phrases: dict[int, dict[str, None]] = {}  # a dict is an insertion-ordered set: repeats are kept once, in order
    total = empty = 0
    entry_ids = UniqueField(ann, "image id", "[{}] and [{}]")
    for i, entry in enumerate(ann.load("list")):
        entry_id = ann.field(entry, ("image_id", "id"), "int", f"[{i}]")
        entry_ids.add(entry_id, i)
        for j, region in enumerate(ann.field(entry, "regions", "list", f"[{i}]")):
            where = f"[{i}].regions[{j}]"
            # ViLT's write_vg.py groups by the region's own image_id; the entry's id is only a fallback.
            image_id = ann.field(region, "image_id", "int", where, default=entry_id)
            if image_id not in links:
                raise ann.error(f"{where}.image_id", f"is {image_id}, which has no entry in {meta.path}")
            raw = ann.field(region, "phrase", "str", where)
            total, empty = total + 1, empty + (not raw.strip())
            for phrase in _clean([raw]):
                phrases.setdefault(image_id, {})[phrase] = None
    _log_dropped_empty(ann.path, total, total - empty)

    index = DirectoryIndex()
    records: list[ImageCaptions] = []
    missing: list[str | None] = []
    excluded = 0
    for image_id, texts in phrases.items():
        coco_id, flickr_id = links[image_id]
        if coco_id in exclude_coco_ids or flickr_id in exclude_flickr_ids:
            excluded += 1
            continue
        name = f"{image_id}.jpg"
        path = next((d / name for d in dirs if index.has(d / name)), None)
        missing.append(None if path else str(dirs[0] / name))
        records.append(ImageCaptions(f"vg:{image_id}", str(path or dirs[0] / name), list(texts), "vg"))
    logger.info("Visual Genome: %d images, %d dropped as evaluation images", len(records), excluded)
    return drop_missing(records, missing, ann.path, dirs, allow_missing)


def to_hf_dataset(records: Sequence[ImageCaptions]) -> datasets.Dataset:
    """An in-memory Arrow `datasets.Dataset` with columns image_id, image_path, captions (list of str), source."""
    import datasets

    return datasets.Dataset.from_dict(
        {name: [getattr(r, name) for r in records] for name in CAPTION_COLUMNS}, features=caption_features()
    )


def write_jsonl(records: Iterable[ImageCaptions], path: PathLike) -> Path:
    """One JSON object per record and line, the input of `load_caption_dataset`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
    return path


def load_caption_dataset(
    paths: PathLike | Sequence[PathLike], streaming: bool = False, cache_dir: PathLike | None = None
) -> datasets.Dataset | datasets.IterableDataset:
    """JSON-lines files from `write_jsonl` as one Arrow `Dataset` (converted once, then memory-mapped from the
    `datasets` cache, or `cache_dir`) or, with `streaming=True`, an `IterableDataset` read lazily. Local files only:
    this works with HF_DATASETS_OFFLINE=1."""
    given = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not given:
        raise ValueError("load_caption_dataset: no files given")
    files = [absolute_path(p) for p in given]
    if missing := [str(p) for p in files if not p.is_file()]:
        # `datasets` would report these as an unresolvable data-files pattern, which hides the path.
        raise FileNotFoundError(f"caption files not found: {', '.join(missing)}")
    import datasets

    return datasets.load_dataset(
        "json",
        data_files=[str(p) for p in files],
        split="train",
        features=caption_features(),
        streaming=streaming,
        cache_dir=None if cache_dir is None else str(cache_dir),
    )
