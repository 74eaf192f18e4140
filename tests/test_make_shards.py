"""`pixelbert-make-shards`: a config's corpus, leak filters included, and a CC3M-style TSV, as streamable shards."""

from pathlib import Path

import datasets
import pytest
import yaml
from PIL import Image

from pixelbert_pl.data import PretrainDataModule
from pixelbert_pl.data.shards import read_shard_index
from pixelbert_pl.make_shards import main


def _ids(out: Path, split: str) -> list[str]:
    urls = read_shard_index(str(out), split).urls()
    return [row["image_id"] for row in datasets.load_dataset("parquet", data_files=urls, streaming=True, split="train")]


def _config(root: Path, tokenizer: str, tmp_path: Path) -> tuple[Path, dict]:
    coco, vg = root / "coco", root / "vg"
    init_args = {
        "tokenizer": tokenizer,
        "karpathy_file": str(coco / "dataset_coco.json"),
        "image_root": str(coco),
        "vg_regions": str(vg / "region_descriptions.json"),
        "vg_image_data": str(vg / "image_data.json"),
        "vg_image_dirs": [str(vg / "VG_100K")],
        "flickr30k_file": str(root / "flickr30k" / "dataset_flickr30k.json"),
        "image_min_size": 64,
        "image_max_size": 96,
        "num_workers": 0,
    }
    path = tmp_path / "pretrain.yaml"
    data = {"class_path": "pixelbert_pl.data.PretrainDataModule", "init_args": init_args}
    path.write_text(yaml.safe_dump({"data": data}))
    return path, init_args


def test_a_config_writes_the_datamodules_splits_with_its_leak_filters(coco_vg_root, minilm_path, tmp_path, capsys):
    config, init_args = _config(coco_vg_root, minilm_path, tmp_path)
    out = tmp_path / "shards"
    assert main(["--config", str(config), "--out", str(out), "--records-per-shard", "3"]) == 0
    expected = PretrainDataModule(**init_args).split_records("fit")
    train = _ids(out, "train")
    assert sorted(train) == sorted(r.image_id for r in expected["train"])
    assert "vg:3" not in train and "vg:4" not in train and "vg:5" in train  # COCO val / Flickr30K test dropped
    assert not set(train) & {"coco:5", "coco:6", "coco:7", "coco:8"}  # Karpathy val + test
    assert sorted(_ids(out, "val")) == sorted(r.image_id for r in expected["val"]) == ["coco:5", "coco:6"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"train: {len(train)} records, {sum(len(r.captions) for r in expected['train'])} pairs, " \
        f"{-(-len(train) // 3)} shards -> {out}"  # fmt: skip
    assert lines[1].startswith("val: 2 records, 10 pairs, 1 shards")

    # --data.init_args.* overrides reach the DataModule.
    assert main(["--config", str(config), "--out", str(out), "--data.init_args.max_val_images", "1"]) == 0
    assert _ids(out, "val") == ["coco:5"]
    assert main(["--config", str(config), "--out", str(out), "--data.init_args.nope", "1"]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_tsv_becomes_a_train_split_and_a_bad_line_exits_2(tmp_path, capsys) -> None:
    for name, colour in (("a.png", (255, 0, 0)), ("b.png", (0, 255, 0))):
        Image.new("RGB", (8, 6), colour).save(tmp_path / name)
    tsv = tmp_path / "cc3m.tsv"
    tsv.write_text("a red square\ta.png\na green square\tb.png\nred again\ta.png\n")
    out = tmp_path / "shards"
    assert main(["--tsv", str(tsv), "--image-root", str(tmp_path), "--out", str(out), "--source", "cc"]) == 0
    assert sorted(_ids(out, "train")) == ["cc:a.png", "cc:b.png"]
    assert capsys.readouterr().out.startswith("train: 2 records, 3 pairs, 1 shards")

    tsv.write_text("a red square\ta.png\n\tb.png\n")
    assert main(["--tsv", str(tsv), "--image-root", str(tmp_path), "--out", str(out)]) == 2
    assert "cc3m.tsv: line 2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # overrides belong to --config only
        main(["--tsv", str(tsv), "--image-root", str(tmp_path), "--out", str(out), "--data.init_args.x", "1"])
    assert exit_.value.code == 2


def test_the_streaming_recipe_is_refused_naming_the_recipe_to_give(tmp_path, capsys) -> None:
    """It ended in a NotImplementedError traceback: the streaming recipe reads shards, it has no records to write."""
    recipe = Path(__file__).resolve().parents[1] / "lightning_configs" / "pretrain" / "streaming_r50.yaml"
    (tmp_path / "shards").mkdir()
    code = main(["--config", str(recipe), "--out", str(tmp_path / "out"), "--data.init_args.shards",
                 str(tmp_path / "shards")])  # fmt: skip
    assert code == 2
    assert "reads shards, not annotation files: give pixelbert-make-shards the recipe" in capsys.readouterr().err
