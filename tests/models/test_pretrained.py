"""save_pretrained / from_pretrained: the same outputs, the same preprocessing, the tokenizer alongside, no pickle."""

import json

import pytest
import torch

from pixelbert_pl import PixelBertModel, create_model
from pixelbert_pl.processing import ProcessingConfig, load_tokenizer


def test_round_trip_gives_identical_outputs_and_config(tmp_path, shapes_root) -> None:
    processing = ProcessingConfig(tokenizer=None, image_min_size=64, image_max_size=96, max_text_length=20)
    model = create_model("pixelbert_tiny", processing=processing).eval()
    tokenizer = load_tokenizer(shapes_root / "vocab.txt")
    model.save_pretrained(tmp_path / "export", tokenizer=tokenizer, extra_config={"task": "none"})
    assert {p.name for p in (tmp_path / "export").iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert json.loads((tmp_path / "export" / "config.json").read_text())["task"] == "none"

    loaded = PixelBertModel.from_pretrained(tmp_path / "export").eval()
    # The architecture and every preprocessing setting come back; the tokenizer is the saved copy.
    assert loaded.config == model.config.replace(text_encoder=None)
    assert loaded.processing == processing.replace(tokenizer=str(tmp_path / "export"))
    reloaded_tokenizer = load_tokenizer(loaded.processing.tokenizer)
    text = "a small red circle left of a blue square"
    assert reloaded_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]

    ids = torch.tensor(tokenizer([text, "two shapes"], padding=True)["input_ids"])
    images = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(ids, pixel_values=images).sequence_output
        got = loaded(ids, pixel_values=images).sequence_output
    assert torch.equal(got, expected)


def test_a_directory_without_config_is_refused(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        PixelBertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model": {}}')
    with pytest.raises(ValueError, match="not a pixelbert_pl config"):
        PixelBertModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        PixelBertModel.from_pretrained(tmp_path / "config.json")


@pytest.mark.parametrize(
    "field, value", [("text_encoder", "someone/evil-bert"), ("visual_weights", "{tmp}/planted.pt")]
)
def test_weight_sources_in_the_config_are_not_loaded(tmp_path, shapes_root, monkeypatch, field, value) -> None:
    """model.safetensors holds every weight: a config.json naming a Hub BERT or a local weights file loads the same
    model and reads neither."""
    import transformers

    model = create_model("pixelbert_tiny").eval()
    model.save_pretrained(tmp_path / "export", tokenizer=load_tokenizer(shapes_root / "vocab.txt"))
    (tmp_path / "planted.pt").write_bytes(b"\x80\x02 not a weights file")
    document = json.loads((tmp_path / "export" / "config.json").read_text())
    document["model"][field] = value.format(tmp=tmp_path)
    (tmp_path / "export" / "config.json").write_text(json.dumps(document))

    def refuse(*args, **kwargs):
        raise AssertionError(f"from_pretrained read something besides the export: {args}")

    for owner in (transformers.BertConfig, transformers.BertModel):
        monkeypatch.setattr(owner, "from_pretrained", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = PixelBertModel.from_pretrained(tmp_path / "export").eval()
    assert loaded.config == model.config
    ids, images = torch.tensor([[2, 7, 9, 3]]), torch.randint(0, 256, (1, 3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(
            loaded(ids, pixel_values=images).sequence_output, model(ids, pixel_values=images).sequence_output
        )


@pytest.mark.parametrize("damaged", ["config.json", "model.safetensors"])
def test_a_damaged_export_file_is_named(tmp_path, damaged) -> None:
    """json's and safetensors' own errors named no file ("Error while deserializing header: ...")."""
    create_model("pixelbert_tiny").save_pretrained(tmp_path / "export")
    path = tmp_path / "export" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    expected = "not JSON" if damaged == "config.json" else "not a readable safetensors file"
    with pytest.raises(ValueError, match=rf"{path}: {expected} .*again"):
        PixelBertModel.from_pretrained(tmp_path / "export")
