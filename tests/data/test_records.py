import numpy as np
import pytest

from pixelbert_pl.data.captions import ImageCaptions
from pixelbert_pl.data.records import negative_caption


def test_negatives_are_never_own_captions() -> None:
    """One policy for pre-training's ITM negatives and retrieval's: another image's caption, none of this image's."""
    records = [ImageCaptions(f"x:{i}", "unused", [f"caption {i % 3}", "shared"], "x") for i in range(6)]
    for index in range(6):
        own = set(records[index].captions)
        drawn = {negative_caption(records, index, own, np.random.default_rng(seed)) for seed in range(30)}
        assert drawn and not drawn & own
        assert drawn <= {f"caption {i % 3}" for i in range(6)} - own


def test_a_corpus_without_distinct_captions_names_the_image() -> None:
    records = [ImageCaptions(f"x:{i}", f"/img/{i}.png", ["the same"], "x") for i in range(3)]
    with pytest.raises(ValueError, match=r"image x:1 \(/img/1\.png\): 1000 captions drawn .* too few distinct"):
        negative_caption(records, 1, {"the same"}, np.random.default_rng(0))
