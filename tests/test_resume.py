"""Exact resume through `pixelbert fit` (tests/resume_runs.py): a run resumed with `--ckpt_path` from a mid-epoch,
an epoch's last step or an epoch-end-hook checkpoint ends with the tensors of an uninterrupted run, with 0 or 2
workers, in 1 or 2 processes; a run stopped by SIGTERM to its process group or by kill -9 continues exactly with
`--ckpt_path last`; and resuming runs no code from the file."""

from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from pixelbert_pl.harness.datamodules import ShapesWorldDataModule
from pixelbert_pl.tasks import PretrainTask
from resume_runs import (
    BATCH_SIZE,
    CORPUS_IMAGES,
    ENDINGS,
    SOURCES,
    end_and_resume,
    ending_reference,
    final_state,
    recipe_data,
    resume,
    resume_with_data,
    uninterrupted,
)


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


@pytest.fixture(scope="module")
def ending_reference_run(resume_root, tmp_path_factory) -> tuple[Path, int]:
    """The uninterrupted run the ending runs compare with (1 process, 2 workers, a checkpoint every step)."""
    out = tmp_path_factory.mktemp("ending_full")
    return out, ending_reference(resume_root, out, 2, 1)


@pytest.mark.parametrize("ending", ["SIGTERM to the process group", "kill -9"])
def test_a_stopped_run_continues_exactly_with_ckpt_path_last(resume_root, tmp_path, ending_reference_run, ending):
    """SIGTERM to the group (the workers too) exited 0 or 1 with nothing saved; after kill -9 the run's lock stays
    and `--ckpt_path last` must take it over."""
    reference, steps = ending_reference_run
    ended = end_and_resume(resume_root, reference, tmp_path / "stopped", steps, ending, 2, 1)
    assert (ended.exit_code, ended.resumed_exit_code) == (ENDINGS[ending][1], 0), ended.said[-3000:]
    assert ended.stopped_at == (8 if ending.startswith("SIGTERM") else 5)  # step 7 finished / the save before it
    assert (ended.last_differs, ended.differ) == (0, 0), ended
    assert ("which is no longer running" in ended.said) == (ending == "kill -9")
    # What a user reads: where the run went, and none of Lightning's advertisements or deprecation noise.
    assert f"checkpoints: {tmp_path / 'stopped' / 'pretrain' / 'checkpoints'}" in ended.said
    assert "Tip:" not in ended.said and "LeafSpec" not in ended.said


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


@pytest.mark.parametrize("source", ["mid_epoch", "epoch_end_step"])
def test_a_run_streamed_from_shards_resumes_exactly(resume_root, tmp_path, source) -> None:
    from pixelbert_pl.data.shards import write_shards
    from pixelbert_pl.data.streaming import StreamingPretrainDataModule

    shards = tmp_path / "shards"
    files = ShapesWorldDataModule(root=str(resume_root), num_workers=0)
    write_shards(list(files.split_records("fit")["train"]), shards, records_per_shard=2)  # 8 shards: 2 workers x 4
    settings = recipe_data("image_min_size", "image_max_size", "captions_per_image", "mlm_probability",
                           "mlm_word_probabilities", "seed")  # fmt: skip
    settings.update(shards=str(shards), tokenizer=str(resume_root / "vocab.txt"), max_text_length=24, val_split=None,
                    batch_size=BATCH_SIZE, num_workers=2)  # fmt: skip
    steps = len(StreamingPretrainDataModule(**settings).train_dataloader())
    assert steps == 12  # 16 images x 3 items over 2 workers' 4 shards each, in batches of 4
    class_path = "pixelbert_pl.data.StreamingPretrainDataModule"
    result = resume_with_data(resume_root, tmp_path, class_path, settings, steps, 2, source)
    assert (result.differ, result.warned_not_resumable) == (0, False), result


@pytest.mark.parametrize("source", ["mid_epoch", "epoch_end_step"])
def test_a_bucketed_run_resumes_exactly(mixed_shapes_root, tmp_path, source) -> None:
    """Fixed padded shapes on images of 9 sizes: the bucketed sampler's position travels in the checkpoint too."""
    from pixelbert_pl.data import PretrainDataModule

    root = mixed_shapes_root
    settings = recipe_data("captions_per_image", "mlm_probability", "mlm_word_probabilities", "seed")
    settings.update(
        karpathy_file=str(root / "karpathy.json"), image_root=str(root), train_splits=["train"],
        tokenizer=str(root / "vocab.txt"), image_min_size=32, image_max_size=64, size_divisor=8,  # the recipe's grid
        pad_long_sides=[48], text_pad_multiple=8, max_text_length=24, batch_size=BATCH_SIZE, num_workers=2,
    )  # fmt: skip
    module = PretrainDataModule(**settings)
    module.setup("fit")
    steps = len(module.train_dataloader())
    assert steps % 2 == 0 and steps >= 4, steps
    class_path = "pixelbert_pl.data.PretrainDataModule"
    result = resume_with_data(root, tmp_path, class_path, settings, steps, 2, source)
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
    with pytest.raises(RuntimeError, match=r"size mismatch for net\.model\.bert\.embeddings\.word_embeddings\.weight"):
        resume(tmp_path / "small.ckpt")
