"""`pixelbert fit` writes checkpoints atomically, names the file in every loading error, keeps `last.ckpt` at the
last step of a run however it ends, and stops cleanly on SIGTERM / Ctrl-C (best.ckpt and the run folder:
tests/test_user_paths.py; the resume table of endings: tests/test_resume.py)."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import sys
from pathlib import Path

import pytest
import torch

from pixelbert_pl.checkpoints import AtomicCheckpointIO
from pixelbert_pl.cli import main
from pixelbert_pl.models.checkpoint_reader import load_checkpoint
from vqa_runs import VQA, vqa_args

SAVE_LAST_EVERY_5 = [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                      "init_args": {"save_last": True, "every_n_train_steps": 5}}]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["pixelbert"])


def _cli_checkpoint_io(shapes_root: Path, out: Path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "argv", ["pixelbert"])
    cli = main(["--config", str(VQA), "--data.init_args.root", str(shapes_root),
                "--trainer.logger.init_args.save_dir", str(out)], run=False)  # fmt: skip
    return cli.trainer.strategy.checkpoint_io


def _full_disk(monkeypatch, raised: list[str]) -> None:
    """The checkpoint folder on another file system (rename across devices fails, so a move copies) that fills up."""
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(dst).endswith(".ckpt"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst, *args, **kwargs)

    def sendfile(*args, **kwargs):  # type: ignore[no-untyped-def]
        raised.append("sendfile")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "sendfile", sendfile)
    real_save = torch.save

    def save(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        if hasattr(f, "write") and not hasattr(f, "getvalue"):  # a file on the full disk, not a memory buffer
            f.write(b"\0" * 100)
            raised.append("write")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_a_save_cut_short_by_a_full_disk_leaves_the_previous_checkpoint_whole(shapes_root, tmp_path, monkeypatch):
    io = _cli_checkpoint_io(shapes_root, tmp_path, monkeypatch)
    assert isinstance(io, AtomicCheckpointIO)
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "weights": torch.ones(3)}, path)
    raised: list[str] = []
    _full_disk(monkeypatch, raised)
    with pytest.raises(
        OSError, match=r"no space left \(ENOSPC\) to write checkpoint .*last\.ckpt; the file there before is intact"
    ):
        io.save_checkpoint({"global_step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert raised  # the full disk was met
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left behind


def test_a_real_full_device_is_named_enospc(tmp_path) -> None:
    """/dev/full fails every write with ENOSPC, which torch's zip writer wraps in a RuntimeError naming no errno."""
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "weights": torch.ones(3)}, path)
    (tmp_path / f".last.ckpt.{os.getpid()}.tmp").symlink_to("/dev/full")  # where the save writes before renaming
    with pytest.raises(OSError, match=r"no space left \(ENOSPC\) to write checkpoint .*last\.ckpt") as raised:
        io.save_checkpoint({"global_step": 2, "weights": torch.zeros(10**6)}, path)
    assert raised.value.errno == errno.ENOSPC
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize(
    ("ending", "flags", "expected_step"),
    [("max_steps off the save interval", ["--trainer.max_steps", "6"], 6),
     ("max_steps on the save interval", ["--trainer.max_steps", "5"], 5),
     ("max_epochs", ["--trainer.max_steps", "-1", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "7"],
      7)],
)  # fmt: skip
def test_last_ckpt_holds_the_last_step_of_a_run_that_ends(shapes_root, tmp_path, ending, flags, expected_step) -> None:
    """Lightning 2.6 saves "last" at the end only when it never saved one: with a save every 5 steps, a run of 6
    (or 7) steps ended with last.ckpt at step 5."""
    callbacks = ["--trainer.callbacks", json.dumps(SAVE_LAST_EVERY_5)]
    cli = main(["fit", *vqa_args(shapes_root, tmp_path, *callbacks, *flags)])
    assert cli.trainer.global_step == expected_step
    last = load_checkpoint(tmp_path / "vqa" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == expected_step
    numbered = tmp_path / "vqa" / "checkpoints" / f"epoch=0-step={expected_step}.ckpt"
    assert numbered.is_file() == (expected_step % 5 == 0)  # the save every 5 steps still writes its own
    model = cli.model.state_dict()
    assert all(torch.equal(v, model[k]) for k, v in last["state_dict"].items())


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_the_current_step_and_exits_non_zero(shapes_root, tmp_path, signum, code, caplog) -> None:
    """SIGTERM (a pre-empted job) exited 0 with nothing saved; Ctrl-C exited 1, also unsaved."""
    stop = [{"class_path": "cli_callbacks.SignalAt", "init_args": {"step": 3, "signum": int(signum)}}]
    callbacks = ["--trainer.callbacks", json.dumps(SAVE_LAST_EVERY_5 + stop)]
    with pytest.raises(SystemExit) as exited:
        main(["fit", *vqa_args(shapes_root, tmp_path, *callbacks)])
    assert exited.value.code == code
    assert load_checkpoint(tmp_path / "vqa" / "checkpoints" / "last.ckpt")["global_step"] == 4  # step 3 finished
    assert f"stopped by {signal.Signals(signum).name} at step 4" in caplog.text
    assert not (tmp_path / "vqa" / "checkpoints.lock").exists()
    assert signal.getsignal(signum) is not None and "FinalCheckpoint" not in repr(signal.getsignal(signum))


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", r"is empty \(0 bytes\)"), (b"PK\x03\x04" + b"\0" * 64, "is truncated or not a torch checkpoint"),
     # Random bytes fail torch's reader in several ways: UnpicklingError, IndexError, KeyError, UnicodeDecodeError.
     *((random.Random(seed).randbytes(512), "is not a torch checkpoint") for seed in (0, 2, 20, 195)),
     ("payload", r"holds .*Payload: refused, because unpickling"),
     ("no_state_dict", "holds no 'state_dict'"), ("directory", "is a directory")],
)  # fmt: skip
def test_unreadable_checkpoints_are_named_through_the_cli(shapes_root, tmp_path, content, expected) -> None:
    """torch's errors name no file; its advice for a refused object (weights_only=False) would run the object."""
    from cli_callbacks import Payload

    bad = tmp_path / "downloaded.ckpt"
    if content == "payload":
        torch.save({"state_dict": {}, "payload": Payload()}, bad)
    elif content == "no_state_dict":
        torch.save({"weights": torch.ones(2)}, bad)
    elif content == "directory":
        bad.mkdir()
    else:
        bad.write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(Exception, match=rf"ckpt_path='{bad}' {expected}") as raised:
        main(["validate", *vqa_args(shapes_root, tmp_path / "runs", "--ckpt_path", str(bad))])
    assert "weights_only=False will likely succeed" not in str(raised.value)


def test_a_save_cut_short_by_a_kill_leaves_no_temporary_file_behind(shapes_root, tmp_path, caplog) -> None:
    folder = tmp_path / "vqa" / "checkpoints"
    folder.mkdir(parents=True)
    dead = 2**22 + 17  # above Linux's default pid_max: no process has it
    stale = folder / f".last.ckpt.{dead}.tmp"
    stale.write_bytes(b"half a checkpoint")
    main(["fit", *vqa_args(shapes_root, tmp_path, max_steps=1)])
    assert not stale.exists()
    assert f"removing {stale}" in caplog.text
    assert (folder / "last.ckpt").is_file()
