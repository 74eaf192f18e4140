"""Own data through `datasets` for every task (issue 34): the Hub schemas as published, saved as a save_to_disk folder,
as Parquet files and as a folder laid out like a Hub dataset repo (the Hub-id code path, offline), read with no
conversion step, fitted through `pixelbert fit`, and giving the same batches as the published-format files."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch

import hf_corpora
from pixelbert_pl.cli import main
from pixelbert_pl.data import (
    CaptionColumns,
    DatasetSource,
    HFClassificationDataModule,
    HFNLVR2DataModule,
    HFPretrainDataModule,
    HFRetrievalDataModule,
    HFVQADataModule,
    PairColumns,
    VQAColumns,
)
from pixelbert_pl.data.sources import MissingColumnError, SourceError
from pixelbert_pl.harness.datamodules import ShapesWorldRetrievalDataModule, ShapesWorldVQADataModule

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "pixelbert_pl" / "harness" / "configs"
SMALL = {"image_min_size": 64, "image_max_size": 64, "max_text_length": 24, "batch_size": 4, "num_workers": 0}
FORMS = ("save_to_disk", "parquet", "hub_layout")


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def hub(shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, DatasetSource]]:
    """Each Hub schema (vqa, karpathy, snli_ve) in each form, as the `DatasetSource` that reads it."""
    out = tmp_path_factory.mktemp("hub")
    sources: dict[str, dict[str, DatasetSource]] = {}
    builders = {"vqa": hf_corpora.vqa_v2, "karpathy": hf_corpora.karpathy, "snli_ve": hf_corpora.snli_ve}
    for schema, build in builders.items():
        data = build(shapes_root)
        data.save_to_disk(str(out / schema / "save_to_disk"))
        for split, table in data.items():
            table.to_parquet(str(out / schema / "parquet" / f"{split}.parquet"))
            table.to_parquet(str(out / schema / "hub_layout" / "data" / f"{split}-00000-of-00001.parquet"))
        parquet = {split: str(out / schema / "parquet" / f"{split}.parquet") for split in data}
        sources[schema] = {
            "save_to_disk": DatasetSource(path=str(out / schema / "save_to_disk")),
            "parquet": DatasetSource(data_files=parquet),
            "hub_layout": DatasetSource(path=str(out / schema / "hub_layout")),
        }
    return sources


@pytest.mark.parametrize("form", FORMS)
def test_every_hub_schema_reads_in_every_form(hub: dict, shapes_root: Path, form: str) -> None:
    tokenizer = str(shapes_root / "vocab.txt")
    vqa = HFVQADataModule(hub["vqa"][form], tokenizer=tokenizer, answer_min_count=1, **SMALL)
    retrieval = HFRetrievalDataModule(hub["karpathy"][form], tokenizer=tokenizer, num_negatives=2, **SMALL)
    snli = HFClassificationDataModule(hub["snli_ve"][form], list(hf_corpora.SNLI_LABELS), tokenizer=tokenizer, **SMALL)
    for dm in (vqa, retrieval, snli):
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        assert batch.pixel_values.shape[-2:] == (64, 64) and batch.pixel_values.dtype == torch.uint8
        assert batch.input_ids.shape[0] >= 4 and not (batch.input_ids == dm.tokenizer.unk_token_id).all()
    assert vqa.records("val")[0].answers and len(vqa.records("val")[0].answers) == 10
    assert all(len(r.captions) == 5 for r in retrieval.records("val"))
    assert {r.label_name for r in snli.records("train")} == set(hf_corpora.SNLI_LABELS)


@pytest.mark.parametrize(
    ("files", "hf", "extra"),
    [(ShapesWorldVQADataModule, HFVQADataModule, {"answer_min_count": 1}),
     (ShapesWorldRetrievalDataModule, HFRetrievalDataModule, {"num_negatives": 3})],
)  # fmt: skip
def test_a_datasets_copy_gives_the_batches_the_published_files_give(
    hub: dict, shapes_root: Path, files: Any, hf: Any, extra: dict
) -> None:
    """Same questions, captions and image bytes in the same order: every batch of an epoch is equal, so a
    fine-tuning reads the same data either way (quality equal to the published-format path)."""
    schema = "vqa" if hf is HFVQADataModule else "karpathy"
    published = files(root=str(shapes_root), **SMALL, **extra)
    copy = hf(hub[schema]["save_to_disk"], tokenizer=str(shapes_root / "vocab.txt"), **SMALL, **extra)
    for loader in ("train_dataloader", "val_dataloader"):
        pairs = list(zip(getattr(published, loader)(), getattr(copy, loader)(), strict=True))
        assert pairs
        for a, b in pairs:
            for name, value in vars(a).items():
                other = getattr(b, name)
                assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, name
    if hf is HFRetrievalDataModule:
        assert torch.equal(published.val_texts.input_ids, copy.val_texts.input_ids)


def _fit(config: str, out: Path, data: list[str], *extra: str, max_steps: int = 3) -> Any:
    """A shipped demo recipe with its DataModule swapped by `--data`, a few steps on the CPU."""
    return main([
        "fit", "--config", str(CONFIGS / config), *data,
        "--trainer.max_steps", str(max_steps), "--trainer.val_check_interval", str(max_steps),
        "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(out), *extra,
    ])  # fmt: skip


def _data(cls: str, source: DatasetSource, shapes_root: Path, *extra: str) -> list[str]:
    settings = {**SMALL, "tokenizer": str(shapes_root / "vocab.txt")}
    flags = [f"--data.init_args.{k}={v}" for k, v in settings.items()]
    source_flags = [f"--data.init_args.source={json.dumps({k: v for k, v in vars(source).items() if v})}"]
    return ["--data", f"pixelbert_pl.data.{cls}", *source_flags, *flags, *extra]


def _hand_vqa_accuracy(predicted: list[str], answers: list[list[str]]) -> float:
    """VQA v2's accuracy, written out: each of the 10 leave-one-out sets scores min(1, matches / 3)."""
    scores = []
    for guess, given in zip(predicted, answers, strict=True):
        subsets = [given[:i] + given[i + 1 :] for i in range(len(given))]
        scores.append(sum(min(1.0, s.count(guess) / 3) for s in subsets) / len(subsets))
    return sum(scores) / len(scores)


def test_vqa_from_a_saved_hub_dataset_fits_and_validates_as_computed_by_hand(
    hub: dict, shapes_root: Path, tmp_path: Path
) -> None:
    data = _data("HFVQADataModule", hub["vqa"]["save_to_disk"], shapes_root, "--data.init_args.answer_min_count=1")
    cli = _fit("vqa_shapes.yaml", tmp_path, data)
    assert cli.trainer.global_step == 3
    last = next((tmp_path / "vqa" / "checkpoints").glob("last*.ckpt"))
    validated = main(["validate", "--config", str(CONFIGS / "vqa_shapes.yaml"), *data,
                      "--trainer.logger.init_args.save_dir", str(tmp_path), "--ckpt_path", str(last)])  # fmt: skip
    logged = float(validated.trainer.callback_metrics["val/vqa_accuracy_overall"])
    task, dm = validated.model.eval(), validated.datamodule
    predicted, answers = [], []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            predicted += [dm.answer_vocab[i] for i in task(batch).argmax(-1).tolist()]
            answers += batch.answers
    assert logged == pytest.approx(_hand_vqa_accuracy(predicted, answers), abs=1e-6)


def test_one_answer_per_question_trains_on_it_and_scores_exact_match(shapes_root: Path, tmp_path: Path) -> None:
    """GQA-style rows (one answer, a path to the image) in a CSV: targets 1.0, not VQA's 0.3 for one human."""
    rows = hf_corpora.vqa_v2(shapes_root)["validation"].select(range(16)).remove_columns("image").to_list()
    path = tmp_path / "gqa.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "question", "answer", "qid"])
        writer.writeheader()
        for r in rows:
            image = f"images/shapes_{r['image_id']:012d}.png"
            writer.writerow({"image": image, "question": r["question"], "answer": r["multiple_choice_answer"],
                             "qid": r["question_id"]})  # fmt: skip
    columns = VQAColumns(answers="answer", question_id="qid", image_id=None, answer_type=None)
    source = DatasetSource(data_files={"train": str(path), "validation": str(path)})
    dm = HFVQADataModule(source, columns, image_root=str(shapes_root), tokenizer=str(shapes_root / "vocab.txt"),
                         answer_min_count=1, **SMALL)  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch.targets.max(dim=1).values.tolist() == [1.0] * batch.targets.shape[0]
    assert [len(a) for a in batch.answers] == [1] * batch.targets.shape[0]


def test_a_csv_of_image_paths_and_captions_fine_tunes_retrieval(shapes_root: Path, tmp_path: Path) -> None:
    """(image path, caption) rows, several per image, as a user writes them: no conversion step."""
    karpathy = json.loads((shapes_root / "karpathy.json").read_text())["images"]
    for split in ("train", "val"):
        with (tmp_path / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "text"])
            for image in (i for i in karpathy if i["split"] == split):
                writer.writerows([f"images/{image['filename']}", s["raw"]] for s in image["sentences"])
    source = DatasetSource(data_files={"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "val.csv")})
    data = _data("HFRetrievalDataModule", source, shapes_root, f"--data.init_args.image_root={shapes_root}",
                 "--data.init_args.columns.image=file", "--data.init_args.columns.caption=text",
                 "--data.init_args.num_negatives=3")  # fmt: skip
    cli = _fit("retrieval_shapes.yaml", tmp_path / "runs", data)
    assert cli.trainer.global_step == 3
    records = cli.datamodule.records("val")
    assert len(records) == sum(i["split"] == "val" for i in karpathy) and all(len(r.captions) == 5 for r in records)
    assert 0 <= float(cli.trainer.callback_metrics["val/i2t_r1"]) <= 1


def test_snli_ve_from_a_hub_layout_folder_fits_through_the_cli(hub: dict, shapes_root: Path, tmp_path: Path) -> None:
    config = CONFIGS.parent.parent.parent.parent / "examples" / "visual_entailment" / "ve_shapes.yaml"
    labels = json.dumps(list(hf_corpora.SNLI_LABELS))
    data = _data("HFClassificationDataModule", hub["snli_ve"]["hub_layout"], shapes_root,
                 f"--data.init_args.labels={labels}")  # fmt: skip
    steps = ["--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.enable_progress_bar", "false"]
    cli = main(["fit", "--config", str(config), *data, *steps, "--trainer.logger.init_args.save_dir", str(tmp_path)])
    assert cli.trainer.global_step == 3 and cli.model.net.labels == list(hf_corpora.SNLI_LABELS)


def test_image_pairs_and_captions_for_pre_training(shapes_root: Path, tmp_path: Path) -> None:
    """NLVR2-style pairs (two image columns, "True" / "False") and pre-training captions from JSON lines."""
    nlvr2 = [json.loads(line) for line in (shapes_root / "nlvr2" / "train.json").read_text().splitlines()]
    images = shapes_root / "nlvr2" / "images"
    rows = []
    for r in nlvr2:
        folder = images / r["identifier"].split("-")[0] / str(r.get("directory", ""))
        stem = "-".join(r["identifier"].split("-")[:3])
        left, right = (next(p for p in (folder / f"{stem}-img{i}.png", images / "train" / f"{stem}-img{i}.png")
                            if p.exists()) for i in (0, 1))  # fmt: skip
        rows.append({"left": str(left), "right": str(right), "text": r["sentence"], "label": r["label"],
                     "identifier": r["identifier"]})  # fmt: skip
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    jsonl = str(tmp_path / "pairs.jsonl")
    source = DatasetSource(data_files={"train": jsonl, "validation": jsonl})
    pairs = HFNLVR2DataModule(source, PairColumns(left="left", right="right", sentence="text"),
                              tokenizer=str(shapes_root / "vocab.txt"), **SMALL)  # fmt: skip
    pairs.setup("fit")
    batch = next(iter(pairs.train_dataloader()))
    assert batch.pixel_values.shape[0] == 2 * batch.labels.shape[0] and set(batch.labels.tolist()) <= {0, 1}

    captions = HFPretrainDataModule(_karpathy_rows(shapes_root, tmp_path), CaptionColumns(), split_column="split",
                                    tokenizer=str(shapes_root / "vocab.txt"), **SMALL)  # fmt: skip
    captions.setup("fit")
    assert {r.image_path for r in captions.train_records}.isdisjoint(r.image_path for r in captions.val_records)
    batch = next(iter(captions.train_dataloader()))
    assert batch.itm_labels.tolist().count(0) == batch.itm_labels.shape[0] // 2


def _karpathy_rows(shapes_root: Path, tmp_path: Path) -> DatasetSource:
    """Flickr30K as on the Hub: one split holding every image, a `split` column saying which Karpathy split."""
    table = datasets.concatenate_datasets(list(hf_corpora.karpathy(shapes_root).values()))
    table.to_parquet(str(tmp_path / "flickr30k.parquet"))
    only = str(tmp_path / "flickr30k.parquet")
    return DatasetSource(data_files={"test": only}, splits={"train": "test", "val": "test", "test": "test"})


def test_errors_name_the_column_and_the_flag(hub: dict, shapes_root: Path) -> None:
    columns = VQAColumns(question="query")
    dm = HFVQADataModule(hub["vqa"]["parquet"], columns, tokenizer=str(shapes_root / "vocab.txt"), **SMALL)
    with pytest.raises(MissingColumnError, match=r"no column 'query' for the question \(set it with "
                       r"--data.init_args.columns.question\).*columns present: .*question"):  # fmt: skip
        dm.setup("fit")
    streamed = DatasetSource(path=hub["vqa"]["save_to_disk"].path, streaming=True)
    dm = HFVQADataModule(streamed, tokenizer=str(shapes_root / "vocab.txt"), **SMALL)
    with pytest.raises(ValueError, match=r"length is not known in advance: set batches_per_epoch .*"
                       r"--data.init_args.batches_per_epoch N"):  # fmt: skip
        dm.setup("fit")


def test_check_data_reads_the_images_a_source_holds(hub: dict, shapes_root: Path, tmp_path: Path, capsys) -> None:
    """`pixelbert-check-data` decodes the bytes of a datasets image column (there is no file to open) and names a
    row whose bytes are no image."""
    from pixelbert_pl.check_data import main as check_data

    table = hf_corpora.vqa_v2(shapes_root)
    bad_id = table["validation"][0]["image_id"]  # every question about this image holds bytes that are no image
    broken = table["validation"].cast_column("image", datasets.Image(decode=False))
    broken = broken.map(lambda row: {"image": {"bytes": b"not a png" if row["image_id"] == bad_id
                                               else row["image"]["bytes"], "path": row["image"]["path"]}})  # fmt: skip
    datasets.DatasetDict({"train": table["train"], "validation": broken}).save_to_disk(str(tmp_path / "vqa"))
    recipe = {"data": {"class_path": "pixelbert_pl.data.HFVQADataModule", "init_args": {
        "source": {"path": str(tmp_path / "vqa")}, "tokenizer": str(shapes_root / "vocab.txt"),
        "answer_min_count": 1, **SMALL}}}  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))
    assert check_data(["--config", str(tmp_path / "recipe.yaml"), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:3]}
    images = len({q["image_id"] for q in table["train"].remove_columns("image")})
    assert rows["train"][:3] == [str(len(table["train"])), str(images), "0"]
    assert rows["val"][2] == "1" and f"split 'validation' image {bad_id}" in out


def test_a_question_id_that_is_no_integer_names_the_row_and_the_fix(shapes_root: Path, tmp_path: Path) -> None:
    rows = [{"image": f"images/shapes_{i:012d}.png", "question": "is there a circle?", "answer": "yes",
             "qid": f"q{i}"} for i in (1, 2)]  # fmt: skip
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = DatasetSource(data_files={"train": str(tmp_path / "q.jsonl"), "validation": str(tmp_path / "q.jsonl")})
    columns = VQAColumns(answers="answer", question_id="qid", image_id=None, answer_type=None)
    dm = HFVQADataModule(source, columns, image_root=str(shapes_root), tokenizer=str(shapes_root / "vocab.txt"),
                         answer_min_count=1, **SMALL)  # fmt: skip
    with pytest.raises(SourceError, match=r"\[0\]\.qid: 'q1' is no integer question id; .*columns.question_id null"):
        dm.setup("fit")


def test_image_paths_of_a_hub_id_are_relative_to_the_working_directory() -> None:
    from pixelbert_pl.data.hf import HFSource

    assert HFSource(DatasetSource(path="HuggingFaceM4/VQAv2")).root() == ""
    assert HFSource(DatasetSource(path="/no/such/folder/train.csv")).root() == ""
    assert HFSource(DatasetSource(data_files=["/tmp/train.csv"])).root() == "/tmp"
