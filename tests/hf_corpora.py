"""ShapesWorld copied into the Hub schemas of issue 34 as `datasets.DatasetDict`s with a `datasets.Image` column (the
PNG files' bytes, unchanged): VQA v2, Flickr30K / COCO Karpathy, SNLI-VE. The same questions, captions and images as
the published-format files, in the same order, so a DataModule reading either must give the same batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

SNLI_LABELS = ("entailment", "neutral", "contradiction")
HUB_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def _image(path: Path) -> dict[str, Any]:
    return {"bytes": path.read_bytes(), "path": path.name}


def _karpathy(root: Path) -> list[dict[str, Any]]:
    return json.loads((root / "karpathy.json").read_text())["images"]


def vqa_v2(root: Path) -> datasets.DatasetDict:
    """ShapesWorld VQA with VQA v2's Hub columns, an image's Karpathy split deciding its questions' split."""
    split_of = {image["cocoid"]: image["split"] for image in _karpathy(root)}
    questions = json.loads((root / "vqa_questions.json").read_text())["questions"]
    annotations = {a["question_id"]: a for a in json.loads((root / "vqa_annotations.json").read_text())["annotations"]}
    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in HUB_SPLITS}
    for q in questions:
        a = annotations[q["question_id"]]
        rows[split_of[q["image_id"]]].append({
            "question_type": a["question_type"], "multiple_choice_answer": a["multiple_choice_answer"],
            "answers": a["answers"], "image_id": q["image_id"], "answer_type": a["answer_type"],
            "question_id": q["question_id"], "question": q["question"],
            "image": _image(root / "images" / f"shapes_{q['image_id']:012d}.png"),
        })  # fmt: skip
    return _dict(rows)


def karpathy(root: Path) -> datasets.DatasetDict:
    """ShapesWorld captions with Flickr30K Karpathy's Hub columns (`image`, `caption`: a list, `sentids`, `split`,
    `img_id`, `filename`), one split per Karpathy split."""
    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in HUB_SPLITS}
    for image in _karpathy(root):
        rows[image["split"]].append({
            "image": _image(root / image["filepath"] / image["filename"]),
            "caption": [s["raw"] for s in image["sentences"]], "sentids": [str(s) for s in image["sentids"]],
            "split": image["split"], "img_id": str(image["imgid"]), "filename": image["filename"],
        })  # fmt: skip
    return _dict(rows)


def snli_ve(root: Path, rows_per_split: int = 24) -> datasets.DatasetDict:
    """SNLI-VE's Hub columns (`Flickr30K_ID`, `gold_label`, `image`, `sentence`) over ShapesWorld: "there is a
    <colour> <shape>" entails, contradicts or is neutral by what the scene holds."""
    scenes = json.loads((root / "scenes.json").read_text())["scenes"]
    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in HUB_SPLITS}
    for scene in scenes:
        split, first = scene["split"], scene["objects"][0]
        if len(rows[split]) >= rows_per_split:
            continue
        for text, label in ((f"there is a {first['colour']} {first['shape']}.", "entailment"),
                            (f"the scene is about {first['shape']}s.", "neutral"),
                            ("the picture is empty.", "contradiction")):  # fmt: skip
            rows[split].append({
                "Flickr30K_ID": scene["file_name"], "gold_label": label, "sentence": text,
                "image": _image(root / "images" / scene["file_name"]),
            })  # fmt: skip
    return _dict(rows)


def _dict(rows: dict[str, list[dict[str, Any]]]) -> datasets.DatasetDict:
    out = {}
    for split, split_rows in rows.items():
        table = datasets.Dataset.from_list(split_rows)
        out[HUB_SPLITS[split]] = table.cast_column("image", datasets.Image())
    return datasets.DatasetDict(out)
