"""VQATask: soft-target BCE, every parameter trained, official accuracy over every question (exact match where a
question has only 1 or 2 answers), EvalAI output."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest
import torch
from task_helpers import SMALL, all_parameters_have_gradients

from pixelbert_pl.data import VQADataModule
from pixelbert_pl.harness.datamodules import ShapesWorldVQADataModule
from pixelbert_pl.models.layouts import task_model_state
from pixelbert_pl.processing.batches import VQABatch
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


def _one_answer_per_question(root: Path, keep_ten: Collection[int] = ()) -> None:
    """GQA-style: each question's only answer is its multiple_choice_answer (except the `keep_ten` question ids)."""
    for path in root.glob("v2_mscoco_*_annotations.json"):
        data = json.loads(path.read_text())
        for ann in data["annotations"]:
            if ann["question_id"] not in keep_ten:
                ann["answers"] = [{"answer": ann["multiple_choice_answer"], "answer_confidence": "yes", "answer_id": 1}]
        path.write_text(json.dumps(data))


def _validate_with(
    predict: Callable[[list[str]], str], root: Path, tokenizer: str
) -> tuple[VQADataModule, dict[str, float]]:
    """Run `trainer.validate` on the corpus at `root` with a model whose arg-max answer is `predict(answers)`."""
    import pytorch_lightning as pl

    questions = [[str(root / f"v2_OpenEnded_mscoco_{s}2014_questions.json")] for s in ("train", "val")]
    annotations = [[str(root / f"v2_mscoco_{s}2014_annotations.json")] for s in ("train", "val")]
    data = VQADataModule(
        questions[0], annotations[0], questions[1], annotations[1], image_root=str(root), tokenizer=tokenizer,
        answer_min_count=1, **SMALL,
    )  # fmt: skip
    task = VQATask(preset="pixelbert_tiny", answer_vocab=data.answer_vocab)

    def forward(batch: VQABatch, **kwargs: Any) -> torch.Tensor:
        logits = torch.full((len(batch.answers), len(task.answer_vocab)), -10.0)
        for row, answers in enumerate(batch.answers):
            logits[row, task.answer_vocab.index(predict(answers))] = 10.0
        return logits

    task.forward = forward  # type: ignore[method-assign]
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(task, datamodule=data, verbose=False)
    return data, metrics


def test_one_answer_per_question_trains_at_one_and_a_right_model_scores_one(vqa_root: Path, minilm_path: str) -> None:
    """GQA-style data: target 1.0 (the official rule gave 0.3) and exact match (it scored a right answer 0.0)."""
    _one_answer_per_question(vqa_root)
    data, metrics = _validate_with(lambda answers: answers[0], vqa_root, minilm_path)
    assert metrics["val/vqa_accuracy_overall"] == 1.0 and metrics["val/vqa_accuracy_exact_match"] == 1.0
    assert "val/vqa_accuracy_official" not in metrics  # no question of this split was scored by the official rule
    (batch,) = list(data.train_dataloader())
    labels = [data.answer_vocab.index(answers[0]) for answers in batch.answers]
    assert batch.targets.sum(1).tolist() == [1.0] * 4 and batch.targets[range(4), labels].tolist() == [1.0] * 4


def test_a_mixed_split_logs_each_rule_under_its_name(vqa_root: Path, minilm_path: str) -> None:
    """Val: question 42000 keeps its ten answers ("yes" x10), 42001 has one ("red"); the model always says "yes"."""
    _one_answer_per_question(vqa_root, keep_ten={42000})
    _, metrics = _validate_with(lambda answers: "yes", vqa_root, minilm_path)
    assert metrics["val/vqa_accuracy_official"] == 1.0 and metrics["val/vqa_accuracy_exact_match"] == 0.0
    assert metrics["val/vqa_accuracy_overall"] == 0.5
