"""Fixtures: tiny VQA v2, NLVR2 and Flickr30K corpora in their published formats (written by corpora.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpora import make_flickr, make_nlvr2, make_vqa


@pytest.fixture
def vqa_root(tmp_path: Path) -> Path:
    return make_vqa(tmp_path)


@pytest.fixture
def nlvr2_root(tmp_path: Path) -> Path:
    return make_nlvr2(tmp_path)


@pytest.fixture
def flickr_root(tmp_path: Path) -> Path:
    return make_flickr(tmp_path)
