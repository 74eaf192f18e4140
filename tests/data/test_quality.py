"""Unreadable training images are replaced and counted, never crash a run and never empty a batch; too many stop
the run with a clear error; evaluation data never substitutes."""

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import pixelbert_pl.data.records
from pixelbert_pl.data.quality import SkipCounter, TooManyBadSamplesError
from pixelbert_pl.harness.datamodules import ShapesWorldDataModule
from pixelbert_pl.harness.shapes import ShapesWorldConfig, generate
from pixelbert_pl.processing.images import UnreadableImageError, load_image


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    generate(tmp_path, ShapesWorldConfig(num_images=16, num_nlvr2=4), seed=0)
    return tmp_path


def _per_image(dm: ShapesWorldDataModule, records):  # type: ignore[no-untyped-def]
    """The DataModule's dataset with one item per image (item i = record i), substituting as training does: the
    substitution is the same over an index of image-caption pairs, whose items of one image come in a run."""
    return dm.dataset(records, train=False)


@pytest.fixture
def decodes(monkeypatch) -> Counter[str]:
    """Image decodes by path, counted from here on."""
    counts: Counter[str] = Counter()

    def counting_load_image(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        counts[path] += 1
        return load_image(path, *args, **kwargs)

    monkeypatch.setattr(pixelbert_pl.data.records, "load_image", counting_load_image)
    return counts


def _data(root: Path, **kwargs) -> ShapesWorldDataModule:
    dm = ShapesWorldDataModule(root=str(root), batch_size=4, num_workers=0, **kwargs)
    dm.setup("fit")
    return dm


def _corrupt(path: str, kind: str) -> None:
    if kind == "html":
        Path(path).write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    elif kind == "truncated":
        Path(path).write_bytes(Path(path).read_bytes()[:100])
    else:
        Path(path).unlink()


@pytest.mark.parametrize("kind", ["html", "truncated", "missing"])
def test_training_item_with_an_unreadable_image_is_the_next_record_and_is_counted(corpus, kind) -> None:
    dm = _data(corpus)
    records = dm.train_records
    bad = 3
    _corrupt(records[bad].image_path, kind)
    counter = SkipCounter(max_fraction=0.5, min_samples=1)
    dataset = _per_image(dm, records).skip_unreadable(counter)
    items = [dataset[(0, i)] for i in range(len(dataset))]
    assert items[bad]["sample_id"] == bad + 1  # the next record, drawn as that record would be
    assert torch.equal(items[bad]["pixel_values"], items[bad + 1]["pixel_values"])
    assert items[bad]["input_ids"] == items[bad + 1]["input_ids"]
    assert counter.totals() == (len(dataset), 1)
    assert all(item["pixel_values"].float().std() > 0 for item in items)  # never a blank image


def test_skips_count_replaced_samples_not_attempts_and_bad_files_are_read_once(corpus, decodes, caplog) -> None:
    """3 bad files, two of them neighbours (so a substitute is bad too), drawn in two epochs: 6 samples replaced,
    where counting attempts gave 8 (and stopped healthy runs); each bad file is decoded and logged once."""
    dm = _data(corpus)
    records = dm.train_records
    n, bad = len(records), [3, 4, 9]
    for i in bad:
        _corrupt(records[i].image_path, "html")
    counter = SkipCounter(max_fraction=3.5 / n, min_samples=n)  # 3 of n per epoch is within it, 4 of n is not
    dataset = _per_image(dm, records).skip_unreadable(counter)
    order = [i for i in range(n) if i not in bad] + bad  # good draws first: the fraction is checked at each skip
    with caplog.at_level(logging.WARNING, logger="pixelbert_pl.data.quality"):
        items = [dataset[(epoch, i)] for epoch in (0, 1) for i in order]
    assert [item["sample_id"] for item in items[n - 3 : n]] == [5, 5, 10]  # 3 -> 4 (bad too) -> 5; 4 -> 5; 9 -> 10
    assert counter.totals() == (2 * n, 6)  # drawn, replaced: one per replaced draw
    bad_paths = [records[i].image_path for i in bad]
    assert all(decodes[path] == 1 for path in bad_paths)  # known bad: never decoded again, in either epoch
    assert [sum(path in r.getMessage() for r in caplog.records) for path in bad_paths] == [1, 1, 1]
    assert set(counter.bad_files) == set(bad_paths) and sum(counter.reasons.values()) == 3

    # The limit compares replaced draws with draws: 3 of n is above 2.5 / n, and the error says so.
    strict = _per_image(dm, records).skip_unreadable(SkipCounter(max_fraction=2.5 / n, min_samples=n))
    with pytest.raises(TooManyBadSamplesError, match=rf"^3 of {n} training samples drawn had an unreadable image"):
        for i in order:
            strict[(0, i)]


def test_a_bad_image_shared_by_several_records_is_decoded_once(corpus, decodes) -> None:
    dm = _data(corpus)
    records = list(dm.train_records)
    records[7] = replace(records[7], image_path=records[2].image_path)  # as VQA's questions share their image
    _corrupt(records[2].image_path, "truncated")
    counter = SkipCounter(max_fraction=0.5, min_samples=1)
    dataset = _per_image(dm, records).skip_unreadable(counter)
    items = [dataset[(0, i)] for i in range(len(dataset))]
    assert items[2]["sample_id"] == 3 and items[7]["sample_id"] == 8
    assert counter.totals() == (len(dataset), 2) and decodes[records[2].image_path] == 1
    assert list(counter.bad_files) == [records[2].image_path]


def test_every_pair_of_an_unreadable_image_is_replaced_by_the_next_images_first(corpus, decodes) -> None:
    dm = _data(corpus, captions_per_image=4)  # 2 matched rows an item: ceil(5 / 2) = 3 items per image
    records = dm.train_records
    _corrupt(records[3].image_path, "html")
    counter = SkipCounter(max_fraction=0.5, min_samples=1)
    dataset = dm.dataset(records).skip_unreadable(counter)
    bad_items = [i for i in range(len(dataset)) if dataset.pairs.locate(i)[0] == 3]
    assert len(bad_items) == 3
    items = [dataset[(0, i)] for i in range(len(dataset))]
    first_of_next = bad_items[-1] + 1
    assert [items[i]["sample_id"] for i in bad_items] == [first_of_next] * 3
    assert counter.totals() == (len(dataset), 3) and decodes[records[3].image_path] == 1


def test_without_skipping_an_unreadable_image_is_an_error_naming_the_file(corpus) -> None:
    dm = _data(corpus)
    path = dm.val_records[0].image_path
    _corrupt(path, "html")
    with pytest.raises(UnreadableImageError, match=Path(path).name):
        dm.dataset(dm.val_records)[(0, 0)]
    with pytest.raises(UnreadableImageError, match=Path(path).name):
        next(iter(dm.val_dataloader()))  # evaluation does not substitute: it would change the metric


def test_too_many_unreadable_samples_stop_the_run_with_a_clear_error(corpus) -> None:
    dm = _data(corpus)
    for i in range(4):
        _corrupt(dm.train_records[i].image_path, "html")
    dataset = _per_image(dm, dm.train_records).skip_unreadable(SkipCounter(max_fraction=0.1, min_samples=4))
    with pytest.raises(TooManyBadSamplesError, match=r"max_skipped_fraction=0.1.*pixelbert-check-data"):
        for i in range(len(dataset)):
            dataset[(0, i)]
    with pytest.raises(ValueError, match="max_skipped_fraction=2"):
        SkipCounter(max_fraction=2)


def test_worker_counts_reach_the_main_process_and_every_batch_is_full(corpus) -> None:
    dm = ShapesWorldDataModule(root=str(corpus), batch_size=4, num_workers=2, max_skipped_fraction=0.5)
    dm.setup("fit")
    _corrupt(dm.train_records[5].image_path, "truncated")
    loader = dm.train_dataloader()
    batches = list(loader)
    assert [b.pixel_values.shape[0] for b in batches] == [4] * (len(loader.dataset) // 4)
    # Each of the image's pairs (one item each, at 2 caption rows) was replaced: 5 captions, 5 samples.
    assert dm.skip_counter.totals()[1] == len(dm.train_records[5].captions) == 5


def test_fit_logs_the_epoch_skips(corpus, tmp_path) -> None:
    from pixelbert_pl.tasks import PretrainTask

    dm = _data(corpus, max_skipped_fraction=0.5)
    _corrupt(dm.train_records[2].image_path, "html")
    task = PretrainTask(preset="pixelbert_tiny", vocab_size=dm.vocab_size)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        limit_val_batches=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(task, datamodule=dm)
    assert trainer.callback_metrics["train/skipped_samples"].item() == len(dm.train_records[2].captions)


class _Serving(torch.utils.data.Dataset):
    def __init__(self, counter: SkipCounter) -> None:
        self.counter = counter

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> int:
        self.counter.served()
        return index


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_counts_reach_the_main_process(context: str) -> None:
    counter = SkipCounter()
    counter.served()  # the main process counts too, before the workers start (its view must not travel with them)
    loader = torch.utils.data.DataLoader(_Serving(counter), num_workers=2, multiprocessing_context=context)
    assert sorted(int(i) for i in loader) == list(range(6))
    assert counter.totals() == (7, 0)
