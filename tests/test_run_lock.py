"""One live `pixelbert fit` per run name (`run_lock.py`): two runs started with one name wrote into one checkpoint
folder, silently. A live owner is refused, a dead one (kill -9) taken over; validate and predict stay allowed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from pixelbert_pl.cli import main
from pixelbert_pl.run_lock import RunInUseError, RunLock, _start_time
from vqa_runs import vqa_args


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["pixelbert"])


def _hold(folder, pid: int, host: str | None = None) -> None:
    """The lock as a `pixelbert fit` of `pid` on `host` (this one by default) wrote it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": host or socket.gethostname(), "started": _start_time(pid), "since": time.time()}
    (folder.parent / "checkpoints.lock").write_text(json.dumps(owner))


def test_a_second_fit_of_a_live_run_is_refused_and_validate_is_not(shapes_root, tmp_path) -> None:
    first = main(["fit", *vqa_args(shapes_root, tmp_path, max_steps=2)])
    last = tmp_path / "vqa" / "checkpoints" / "last.ckpt"
    assert first.trainer.global_step == 2 and last.is_file()
    assert not (tmp_path / "vqa" / "checkpoints.lock").exists()  # released at the end
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # stands for the other run
    try:
        _hold(tmp_path / "vqa" / "checkpoints", live.pid)
        with pytest.raises(
            RunInUseError, match=rf"in use by a live `pixelbert fit` \(pid {live.pid}, started .*--trainer"
        ):
            main(["fit", *vqa_args(shapes_root, tmp_path, "--ckpt_path", "last", max_steps=4)])
        assert sorted(p.name for p in (tmp_path / "vqa").glob("version_*")) == ["version_0"]  # nothing written
        validated = main(["validate", *vqa_args(shapes_root, tmp_path / "validate", "--ckpt_path", str(last))])
        assert "val/vqa_accuracy_overall" in validated.trainer.callback_metrics
    finally:
        live.kill()
        live.wait()


def test_a_dead_owners_lock_is_taken_over_with_a_warning(shapes_root, tmp_path, caplog) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a run killed with -9 leaves its lock like this
    _hold(tmp_path / "vqa" / "checkpoints", dead.pid)
    cli = main(["fit", *vqa_args(shapes_root, tmp_path, max_steps=1)])
    assert cli.trainer.global_step == 1
    assert f"from pixelbert fit pid {dead.pid}, which is no longer running" in caplog.text
    assert not (tmp_path / "vqa" / "checkpoints.lock").exists()


def test_a_lock_held_on_another_host_names_the_file_to_delete(tmp_path) -> None:
    _hold(tmp_path / "checkpoints", 1234, host="gpu-node-7")
    with pytest.raises(RunInUseError, match=r"pid 1234 on host 'gpu-node-7' .* delete .*checkpoints\.lock if that"):
        RunLock(tmp_path / "checkpoints").acquire()


def test_a_lock_of_a_reused_pid_is_taken_over(tmp_path) -> None:
    """The pid is alive, but its process started at another time than the lock's owner: the owner is gone."""
    folder = tmp_path / "checkpoints"
    folder.parent.mkdir(parents=True, exist_ok=True)
    owner = {"pid": 1, "host": socket.gethostname(), "started": "-1", "since": time.time()}
    (tmp_path / "checkpoints.lock").write_text(json.dumps(owner))
    with RunLock(folder) as lock:
        assert json.loads(lock.path.read_text())["pid"] != 1
