"""Tiny downstream corpora in their published formats and layouts (docs/paper_facts.md §7.2, §7.4, §7.5), with real
images; the fixtures in conftest.py write them, the tests import the expected contents from here.

Image sizes differ on purpose (landscape and portrait), so that padding and pixel masks are exercised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

LANDSCAPE, PORTRAIT = (40, 32), (32, 40)  # PIL (width, height)


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_image(path: Path, size: tuple[int, int], colour: tuple[int, int, int], fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


def _answers(*counts: tuple[str, int]) -> list[dict[str, Any]]:
    answers = [answer for answer, n in counts for _ in range(n)]
    return [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)]


# question_id -> (image_id, question, answer_type, multiple_choice_answer, human answers)
VQA_TRAIN = {
    9000: (9, "What color is the bus?", "other", "red", _answers(("red", 8), ("dark red", 2))),
    9001: (9, "How many wheels?", "number", "4", _answers(("4", 3), ("four", 1), ("6", 6))),
    25000: (25, "Is it raining?", "yes/no", "no", _answers(("no", 10))),
    30000: (30, "Is this a cat?", "yes/no", "yes", _answers(("yes", 9), ("no", 1))),
}
VQA_VAL = {
    42000: (42, "Is the sky blue?", "yes/no", "yes", _answers(("yes", 10))),
    42001: (42, "What is on the table?", "other", "red", _answers(("red", 2), ("apple", 8))),
}
VQA_TEST_DEV = {77000: (77, "What is the man holding?"), 78000: (78, "Is it sunny?")}


def _vqa_split(root: Path, subtype: str, questions: dict[int, tuple], annotated: bool) -> tuple[Path, Path | None]:
    info = {"description": "This is v2.0 of the VQA dataset.", "version": "2.0", "year": 2017}
    licence = {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons Attribution 4.0"}
    entries = [{"image_id": q[0], "question": q[1], "question_id": qid} for qid, q in questions.items()]
    qfile = write_json(
        root / f"v2_OpenEnded_mscoco_{subtype}_questions.json",
        {"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "license": licence,
         "data_subtype": subtype, "questions": entries},
    )  # fmt: skip
    folder = "test2015" if subtype.startswith("test") else subtype
    for image_id in {q[0] for q in questions.values()}:
        size = PORTRAIT if image_id % 2 else LANDSCAPE
        write_image(root / folder / f"COCO_{folder}_{image_id:012d}.jpg", size, (image_id * 5 % 256, 90, 160))
    if not annotated:
        return qfile, None
    annotations = [
        {"question_type": "what", "multiple_choice_answer": mc, "answers": answers, "image_id": image_id,
         "answer_type": answer_type, "question_id": qid}
        for qid, (image_id, _, answer_type, mc, answers) in questions.items()
    ]  # fmt: skip
    afile = write_json(
        root / f"v2_mscoco_{subtype}_annotations.json",
        {"info": info, "license": licence, "data_subtype": subtype, "annotations": annotations, "data_type": "mscoco"},
    )
    return qfile, afile


def make_vqa(tmp_path: Path) -> Path:
    """VQA v2 as released: train2014 / val2014 questions + annotations, unannotated test-dev2015 questions whose
    images are in test2015/, and COCO images at <subtype>/COCO_<subtype>_<id:012d>.jpg."""
    _vqa_split(tmp_path, "train2014", VQA_TRAIN, annotated=True)
    _vqa_split(tmp_path, "val2014", VQA_VAL, annotated=True)
    _vqa_split(tmp_path, "test-dev2015", VQA_TEST_DEV, annotated=False)
    return tmp_path


# identifier -> (sentence, label or None, directory or None); examples of one set share a sentence.
NLVR2_TRAIN = {
    "train-10171-0-0": ("One image shows exactly two brown acorns.", "False", 71),
    "train-10171-1-0": ("One image shows exactly two brown acorns.", "True", 71),
    "train-4-0-3": ("The left image contains a dog.", "True", 4),
}
NLVR2_DEV = {
    "dev-850-0-0": ("There are two dogs in total.", "True", None),
    "dev-850-1-0": ("There are two dogs in total.", "False", None),
    "dev-3-2-1": ("A bird is on a branch.", "True", None),
}
NLVR2_TEST1 = {  # no labels, as in a hidden test split
    "test1-12-0-0": ("Both images show a cat.", None, None),
    "test1-12-1-0": ("Both images show a cat.", None, None),
}


def _nlvr2_split(root: Path, name: str, examples: dict[str, tuple]) -> Path:
    lines = []
    for identifier, (sentence, label, directory) in examples.items():
        split, stem = identifier.split("-")[0], identifier.rsplit("-", 1)[0]
        folder = root / "images" / split / (str(directory) if directory is not None else "")
        urls = []
        for side, size in enumerate((LANDSCAPE, PORTRAIT)):
            # NLVR2's ".png" files are often JPEGs; this fixture's always are.
            write_image(folder / f"{stem}-img{side}.png", size, (40 + 60 * side, 120, 200))
            urls.append(f"https://upload.wikimedia.org/{stem}-img{side}.jpg")
        entry = {"validation": {"1": label}, "sentence": sentence, "left_url": urls[0], "writer": "103",
                 "right_url": urls[1], "synset": "acorn", "query": "acorn 38", "identifier": identifier}  # fmt: skip
        if label is not None:
            entry["label"] = label
        if directory is not None:
            entry["directory"] = directory
        lines.append(json.dumps(entry))
    path = root / "data" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_nlvr2(tmp_path: Path) -> Path:
    """NLVR2 as released: data/{train,dev}.json (JSON lines); images/train/<directory>/ and images/dev/; and an
    unlabelled data/test1.json (images/test1/), as a hidden test split is."""
    _nlvr2_split(tmp_path, "train", NLVR2_TRAIN)
    _nlvr2_split(tmp_path, "dev", NLVR2_DEV)
    _nlvr2_split(tmp_path, "test1", NLVR2_TEST1)
    return tmp_path


# filename -> (split, captions). Image 3 shares a caption with image 1: it must never be image 1's negative.
FLICKR = {
    "1000092795.jpg": ("train", ["Two young guys with shaggy hair.", "Two men outside.", "A sunny day."]),
    "10002456.jpg": ("train", ["Several men in hard hats.", "Workers on a roof."]),
    "1000268201.jpg": ("train", ["A child in a pink dress.", "A sunny day."]),
    "1000344755.jpg": ("train", ["Someone in a blue shirt.", "A man on a ladder."]),
    "1000366164.jpg": ("val", ["Two men, one in a gray shirt.", "Two friends.", "A street."]),
    "1000523639.jpg": ("val", ["A man in an orange hat.", "A guy."]),
    "1000919630.jpg": ("val", ["A man sits in a chair.", "A man reads."]),
    "10010052.jpg": ("test", ["A girl is on rollerskates.", "A skater."]),
}


def make_flickr(tmp_path: Path) -> Path:
    """Flickr30K as Karpathy ships it: dataset_flickr30k.json (no filepath, no cocoid) + flickr30k-images/."""
    images, sentid = [], 0
    for imgid, (filename, (split, captions)) in enumerate(FLICKR.items()):
        sentences = []
        for caption in captions:
            sentences.append({"tokens": caption.lower().rstrip(".").split(), "raw": caption, "imgid": imgid,
                              "sentid": sentid})  # fmt: skip
            sentid += 1
        images.append({"sentids": [s["sentid"] for s in sentences], "imgid": imgid, "sentences": sentences,
                       "split": split, "filename": filename})  # fmt: skip
        size = PORTRAIT if imgid % 2 else LANDSCAPE
        write_image(tmp_path / "flickr30k-images" / filename, size, (imgid * 30, 60, 90))
    write_json(tmp_path / "dataset_flickr30k.json", {"images": images, "dataset": "flickr30k"})
    return tmp_path
