"""Exact resume through `pixelbert fit` (tests/resume_runs.py): a run resumed with `--ckpt_path` from a mid-epoch,
an epoch's last step or an epoch-end-hook checkpoint ends with the tensors of an uninterrupted run, with 0 or 2
workers, in 1 or 2 processes; and resuming runs no code from the file."""

from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from pixelbert_pl.harness.datamodules import ShapesWorldDataModule
from pixelbert_pl.tasks import PretrainTask
from resume_runs import CORPUS_IMAGES, SOURCES, final_state, resume, uninterrupted


@pytest.fixture(scope="module")
def resume_root(tmp_path_factory) -> Path:
    """A corpus small enough that two epochs over its image-caption pairs stay short."""
    from pixelbert_pl.harness.shapes import ShapesWorldConfig, generate

    root = tmp_path_factory.mktemp("resume_shapes")
    generate(root, ShapesWorldConfig(num_images=CORPUS_IMAGES, num_nlvr2=4), seed=0)
    return root


@pytest.fixture(scope="module")
def references(resume_root, tmp_path_factory) -> Callable[[int, int], tuple[Path, int]]:
    """Uninterrupted runs by (processes, workers), made when first asked for: (their folder, steps per epoch)."""
    made: dict[tuple[int, int], tuple[Path, int]] = {}

    def get(devices: int, workers: int) -> tuple[Path, int]:
        if (devices, workers) not in made:
            out = tmp_path_factory.mktemp(f"full_{devices}_{workers}")
            made[devices, workers] = out, uninterrupted(resume_root, out, workers, devices)
        return made[devices, workers]

    return get


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("workers", [0, 2])
def test_one_process_resumes_exactly(resume_root, tmp_path, references, workers, source) -> None:
    reference, steps = references(1, workers)
    result = resume(resume_root, reference, tmp_path / "resumed", workers, 1, steps, source)
    assert (result.differ, result.warned_not_resumable) == (0, False), result


def test_workers_do_not_change_what_training_sees(references) -> None:
    (zero, steps), (two, _) = references(1, 0), references(1, 2)
    expected, state = final_state(zero, steps), final_state(two, steps)
    assert [k for k, v in expected.items() if not torch.equal(v, state[k])] == []


@pytest.mark.slow
@pytest.mark.parametrize("source", ["mid_epoch", "epoch_end_hook"])
def test_two_processes_with_workers_resume_exactly(resume_root, tmp_path, references, source) -> None:
    reference, steps = references(2, 2)
    result = resume(resume_root, reference, tmp_path / "resumed", 2, 2, steps, source)
    assert (result.differ, result.warned_not_resumable) == (0, False), result


class Payload:
    """Stands for anything a malicious checkpoint could pickle to run code on load."""


def test_resume_runs_no_code_from_the_file_and_names_mismatched_keys(shapes_root, tmp_path) -> None:
    import pickle

    data = ShapesWorldDataModule(root=str(shapes_root), batch_size=4, num_workers=0)
    small = PretrainTask(preset="pixelbert_tiny", vocab_size=data.vocab_size, model_overrides={"hidden_size": 64})
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(small, datamodule=data)
    trainer.save_checkpoint(tmp_path / "small.ckpt")
    evil = tmp_path / "evil.ckpt"
    checkpoint = torch.load(tmp_path / "small.ckpt", weights_only=True)
    torch.save({**checkpoint, "payload": Payload()}, evil)

    def resume(path: Path) -> None:
        task = PretrainTask(preset="pixelbert_tiny", vocab_size=data.vocab_size)
        trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, limit_val_batches=0)  # fmt: skip
        trainer.fit(task, datamodule=data, ckpt_path=path)

    with pytest.raises(pickle.UnpicklingError, match="Payload"):
        resume(evil)
    with pytest.raises(RuntimeError, match=r"size mismatch for model\.bert\.embeddings\.word_embeddings\.weight"):
        resume(tmp_path / "small.ckpt")
