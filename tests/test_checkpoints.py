"""`pixelbert fit` writes checkpoints atomically (best.ckpt and the run folder: tests/test_user_paths.py)."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest
import torch

from pixelbert_pl.checkpoints import AtomicCheckpointIO
from pixelbert_pl.cli import main
from pixelbert_pl.harness.demo import CONFIGS

VQA = CONFIGS / "vqa_shapes.yaml"


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
        OSError, match=r"no space left to write checkpoint .*last\.ckpt; the file there before is intact"
    ):
        io.save_checkpoint({"global_step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert raised  # the full disk was met
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left behind
