"""Caption corpora for pre-training (docs/paper_facts.md §2.1, §7.1-7.3): raw COCO captions, the Karpathy splits and
Visual Genome region descriptions, read into one record type, `ImageCaptions`, and handed on to Hugging Face `datasets`.

Pre-training must never see evaluation images (docs/prior_art.md L4): take COCO through
`read_karpathy(..., splits=PRETRAIN_SPLITS)` and pass `karpathy_coco_ids(...)` (val + test) to `read_visual_genome`.

Readers fail loudly, through `annotations.py`: a malformed file raises `AnnotationError` naming the file, the entry
and the field; images whose file does not exist raise `FileNotFoundError` unless `allow_missing=True` (then they are
skipped and counted in a warning), so the return type is always a plain `list[ImageCaptions]`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixelbert_pl.data.annotations import (
    AnnotationFile,
    DirectoryIndex,
    PathLike,
    UniqueField,
    absolute_path,
    drop_missing,
)

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

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


@dataclass
class ImageCaptions:
    """One image with all its captions. `image_id` is namespaced by corpus ("coco:391895", "vg:1",
    "flickr30k:1000092795.jpg") so ids of different corpora never collide; `image_path` is absolute."""

    image_id: str
    image_path: str
    captions: list[str]
    source: str


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
