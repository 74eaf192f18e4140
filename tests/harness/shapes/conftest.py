"""The ShapesWorld corpus of corpus_files.CONFIG, generated once for all the tests of the generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelbert_pl.harness.shapes import generate

from .corpus_files import CONFIG


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    generate(out, CONFIG, seed=0)
    return out
