import pytest

import pixelbert_pl
from pixelbert_pl.models.config import PixelBertConfig, preset_processing


def test_presets_are_listed_and_faithful() -> None:
    assert {"pixelbert_r50", "pixelbert_x152", "pixelbert_tiny"} <= set(pixelbert_pl.list_models())
    r50 = pixelbert_pl.get_config("pixelbert_r50")
    assert (r50.backbone, r50.backbone_stride, r50.visual_pool_size, r50.token_stride) == ("resnet50", 32, 2, 64)
    assert (r50.hidden_size, r50.num_hidden_layers, r50.num_attention_heads) == (768, 12, 12)
    assert r50.pixel_sample_size == 100
    r50_input = preset_processing("pixelbert_r50")
    assert (r50_input.image_min_size, r50_input.image_max_size, r50_input.tokenizer) == (800, 1333, "bert-base-uncased")
    assert pixelbert_pl.get_config("pixelbert_x152").backbone == "resnext152_32x8d"
    x152_input = preset_processing("pixelbert_x152")
    assert (x152_input.image_min_size, x152_input.image_max_size) == (600, 1000)


def test_overrides_and_errors_name_the_field() -> None:
    cfg = pixelbert_pl.get_config("pixelbert_tiny", hidden_size=64, num_attention_heads=2)
    assert cfg.hidden_size == 64
    with pytest.raises(TypeError, match="hidden_sizes"):
        pixelbert_pl.get_config("pixelbert_tiny", hidden_sizes=64)
    with pytest.raises(KeyError, match="pixelbert_r51"):
        pixelbert_pl.get_config("pixelbert_r51")
    with pytest.raises(ValueError, match="backbone_stages=5"):
        PixelBertConfig(backbone_stages=5)
    with pytest.raises(ValueError, match="num_attention_heads=5"):
        PixelBertConfig(num_attention_heads=5)


def test_dict_round_trip() -> None:
    cfg = pixelbert_pl.get_config("pixelbert_tiny")
    assert PixelBertConfig.from_dict(cfg.to_dict()) == cfg
