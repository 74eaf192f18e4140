"""`pixelbert-check-data`: scans a recipe's corpus, reports unreadable files by reason, exits non-zero when a run
would stop (or could not start)."""

from pathlib import Path

import pytest

from pixelbert_pl.check_data import main
from pixelbert_pl.harness.demo import CONFIGS
from pixelbert_pl.harness.shapes import ShapesWorldConfig, generate


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    generate(tmp_path, ShapesWorldConfig(num_images=24, num_nlvr2=4), seed=0)
    return tmp_path


def _check(corpus: Path, *extra: str, config: str = "pretrain_shapes.yaml") -> int:
    return main(["--config", str(CONFIGS / config), "--data.init_args.root", str(corpus), "--workers", "1", *extra])


def _split_images(corpus: Path, split: str) -> list[str]:
    import json

    return [
        str(corpus / image["filepath"] / image["filename"])
        for image in json.loads((corpus / "karpathy.json").read_text())["images"]
        if image["split"] == split
    ]


def test_a_clean_corpus_passes(corpus, capsys) -> None:
    assert _check(corpus) == 0
    out = capsys.readouterr().out
    assert "train" in out and "val" in out and out.strip().endswith("max_skipped_fraction=0.01")


def test_unreadable_training_images_are_listed_by_reason_and_judged_against_the_fraction(corpus, capsys) -> None:
    train = _split_images(corpus, "train")
    Path(train[0]).write_text("<!DOCTYPE html><html>404</html>")
    Path(train[1]).write_bytes(Path(train[1]).read_bytes()[:60])
    assert _check(corpus) == 1  # 2 of the training images > 1%
    out = capsys.readouterr().out
    assert "UnidentifiedImageError" in out and Path(train[0]).name in out
    assert _check(corpus, "--data.init_args.max_skipped_fraction", "0.5") == 0


def test_any_unreadable_evaluation_image_fails(corpus, capsys) -> None:
    Path(_split_images(corpus, "val")[0]).write_bytes(b"")
    assert _check(corpus, "--data.init_args.max_skipped_fraction", "0.5") == 1
    assert "val: unreadable images by reason" in capsys.readouterr().out


def test_a_malformed_annotation_file_is_named(corpus, capsys) -> None:
    (corpus / "vqa_questions.json").write_text('{"questions": [{"image_id": 1, ')
    assert _check(corpus, config="vqa_shapes.yaml") == 2
    assert "vqa_questions.json" in capsys.readouterr().err


def test_a_config_without_data_is_refused(tmp_path, capsys) -> None:
    config = tmp_path / "model_only.yaml"
    config.write_text("model:\n  class_path: pixelbert_pl.tasks.PretrainTask\n")
    assert main(["--config", str(config)]) == 2
    assert "no `data:` section" in capsys.readouterr().err


STREAMING = Path(__file__).resolve().parents[1] / "lightning_configs" / "pretrain" / "streaming_r50.yaml"


def _write_shards(corpus: Path) -> Path:
    from pixelbert_pl.data.shards import write_shards
    from pixelbert_pl.harness.datamodules import ShapesWorldDataModule

    out = corpus / "shards"
    for split, records in ShapesWorldDataModule(root=str(corpus), num_workers=0).split_records("fit").items():
        write_shards(list(records), out, split=split, records_per_shard=5)
    return out


def _check_shards(corpus: Path, shards: Path, *extra: str) -> int:
    tokenizer = str(corpus / "vocab.txt")
    return main(["--config", str(STREAMING), "--data.init_args.shards", str(shards), "--data.init_args.tokenizer",
                 tokenizer, "--workers", "1", *extra])  # fmt: skip


def test_a_streaming_recipe_scans_every_shard_its_index_lists(corpus, capsys) -> None:
    shards = _write_shards(corpus)
    assert _check_shards(corpus, shards) == 0
    from pixelbert_pl.data.shards import read_shard_index

    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:3]}
    for split in ("train", "val"):
        index, images = read_shard_index(str(shards), split), str(len(_split_images(corpus, split)))
        # records, images, unreadable, fraction, texts: every caption of every shard
        assert rows[split][:5] == [images, images, "0", "0.00%", str(index.num_pairs)]
        assert f"{split}: {len(index.shards)} shard(s), each readable and as {index.url} lists it" in out


def test_a_truncated_shard_fails_the_scan_naming_it_and_its_index(corpus, capsys) -> None:
    shards = _write_shards(corpus)
    shard = shards / "val-00000-of-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:200])
    assert _check_shards(corpus, shards) == 2
    err = capsys.readouterr().err
    assert f"{shard} (listed in {shards / 'val.index.json'}): cannot be read" in err
    assert "write the split again with pixelbert-make-shards" in err


def test_an_index_listing_other_image_sizes_fails_the_scan_naming_both(corpus, capsys) -> None:
    import json

    shards = _write_shards(corpus)
    index = json.loads((shards / "train.index.json").read_text())
    height, width = index["shards"][1]["image_sizes"][2]
    index["shards"][1]["image_sizes"][2] = [width + 1, height]
    (shards / "train.index.json").write_text(json.dumps(index))
    assert _check_shards(corpus, shards) == 2
    err = capsys.readouterr().err
    assert f"{shards / 'train-00001-of-'}" in err and f"(listed in {shards / 'train.index.json'})" in err
    assert f"is {[height, width]} (height, width), but the index lists shards[1].image_sizes[2] = [{width + 1}, " in err


def test_unreadable_images_inside_shards_are_listed_by_shard_and_judged_against_the_fraction(corpus, capsys) -> None:
    broken = Path(_split_images(corpus, "train")[0])
    broken.write_bytes(broken.read_bytes()[:60])
    shards = _write_shards(corpus)
    assert _check_shards(corpus, shards) == 1  # 1 of the training images > 1%
    out = capsys.readouterr().out
    assert "train: unreadable images by reason" in out and f".parquet: {broken}" in out
    assert _check_shards(corpus, shards, "--data.init_args.max_skipped_fraction", "0.5") == 0


def test_a_lock_another_thread_holds_does_not_stall_the_shard_scan(corpus, capsys) -> None:
    """CI hung here: a forked scan worker inherited tqdm's lock while `datasets`' monitor thread held it, and waited
    for it forever. Workers now start from a fork server. A thread holds the lock for the whole scan."""
    import threading

    import tqdm

    shards = _write_shards(corpus)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with tqdm.tqdm.get_lock():
            held.set()
            release.wait(300)

    threading.Thread(target=hold, daemon=True).start()
    assert held.wait(10)
    result: list[int] = []
    scan = threading.Thread(target=lambda: result.append(_check_shards(corpus, shards)), daemon=True)
    try:
        scan.start()
        scan.join(240)
    finally:
        release.set()
    assert result == [0], "the scan did not finish while another thread held tqdm's lock"
