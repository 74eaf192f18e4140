"""VQATask: soft-target BCE, every parameter trained, official accuracy over every question, EvalAI output."""

from __future__ import annotations

import json

import pytest
import torch
from task_helpers import SMALL, all_parameters_have_gradients

from pixelbert_pl.harness.datamodules import ShapesWorldVQADataModule
from pixelbert_pl.models.layouts import task_model_state
from pixelbert_pl.tasks import VQAResultWriter, VQATask


@pytest.fixture
def data(shapes_root) -> ShapesWorldVQADataModule:
    return ShapesWorldVQADataModule(root=str(shapes_root), **SMALL)


@pytest.fixture
def task(data) -> VQATask:
    return VQATask(preset="pixelbert_tiny", vocab_size=data.vocab_size, answer_vocab=data.answer_vocab)


def test_every_parameter_gets_a_gradient(task, data) -> None:
    batch = next(iter(data.train_dataloader()))
    logits = task(batch)
    assert logits.shape == (batch.input_ids.shape[0], len(data.answer_vocab))
    loss = task.total_loss(task.compute_loss(logits, batch))
    assert torch.isfinite(loss)
    loss.backward()
    assert all_parameters_have_gradients(task) == []


def test_loss_is_bce_times_the_number_of_answers(task, data) -> None:
    batch = next(iter(data.train_dataloader()))
    logits = torch.zeros(batch.targets.shape)  # sigmoid 0.5 everywhere: per-element BCE = log 2
    assert task.compute_loss(logits, batch)["vqa"].item() == pytest.approx(
        torch.log(torch.tensor(2.0)).item() * logits.shape[1]
    )


def test_accuracy_counts_every_question_with_the_official_rule(task, data) -> None:
    batch = next(iter(data.val_dataloader()))
    metric = task.stage_metrics("val")["vqa_accuracy"]
    # Predict each question's first human answer: official accuracy is then 1.0 wherever >= 4 annotators agree.
    answer = [a[0] for a in batch.answers]
    logits = torch.full((len(answer), len(task.answer_vocab)), -10.0)
    for row, a in enumerate(answer):
        if a in task.answer_vocab:
            logits[row, task.answer_vocab.index(a)] = 10.0
    task.update_metrics(task.stage_metrics("val"), logits, batch)
    from pixelbert_pl.metrics import vqa_accuracy

    expected = sum(vqa_accuracy(task.net.decode(logits[i : i + 1])[0], batch.answers[i]) for i in range(len(answer)))
    assert metric.compute()["overall"].item() == pytest.approx(expected / len(answer))
    assert int(metric.total_count) == len(answer)


def test_answer_vocab_is_required_and_saved() -> None:
    with pytest.raises(ValueError, match="answer_vocab"):
        VQATask(preset="pixelbert_tiny")
    task = VQATask(preset="pixelbert_tiny", answer_vocab=["yes", "no"])
    assert task.hparams["answer_vocab"] == ["yes", "no"]


def test_init_from_copies_the_backbone_and_rejects_another_geometry(data, pretrain_checkpoint) -> None:
    task = VQATask(
        preset="pixelbert_tiny", vocab_size=data.vocab_size, answer_vocab=data.answer_vocab,
        init_from=str(pretrain_checkpoint),
    )  # fmt: skip
    saved = task_model_state(torch.load(pretrain_checkpoint, weights_only=False)["state_dict"])
    for key, value in task.model.state_dict().items():
        assert torch.equal(value, saved[f"model.{key}"]), key
    with pytest.raises(ValueError, match="word_embeddings"):
        VQATask(
            preset="pixelbert_tiny",
            vocab_size=data.vocab_size + 1,
            answer_vocab=["a"],
            init_from=str(pretrain_checkpoint),
        )
    with pytest.raises(FileNotFoundError, match=r"init_from='missing\.ckpt': no such checkpoint or weights file"):
        VQATask(preset="pixelbert_tiny", answer_vocab=["a"], init_from="missing.ckpt")


def test_predict_writes_the_evalai_file(task, data, tmp_path) -> None:
    import pytorch_lightning as pl

    out = tmp_path / "results" / "vqa_test-dev.json"
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, callbacks=[VQAResultWriter(str(out))], enable_progress_bar=False,
        limit_predict_batches=2, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.predict(task, datamodule=data, return_predictions=False)
    rows = json.loads(out.read_text())
    # Beside the submission file, every task's default: JSON lines in the run's folder (no logger: the root dir).
    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [(r["id"], r["answer"]) for r in lines] == [(r["question_id"], r["answer"]) for r in rows]
    assert all(0 <= r["score"] <= 1 for r in lines)
    assert rows and all(set(r) == {"question_id", "answer"} for r in rows)
    assert all(isinstance(r["question_id"], int) and r["answer"] in task.answer_vocab for r in rows)
    assert len({r["question_id"] for r in rows}) == len(rows) == 2 * SMALL["batch_size"]
    assert not list(out.parent.glob("*.rank*.json"))
