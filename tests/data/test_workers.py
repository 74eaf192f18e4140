"""DataLoader workers ignore stop signals, yet never keep their main process from exiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# A loader whose iterator is still referenced at exit: torch leaves its workers to multiprocessing's exit hook.
LEAKED_ITERATOR = textwrap.dedent(
    """
    import os, sys
    from torch.utils.data import DataLoader
    from pixelbert_pl.data.workers import ignore_stop_signals, stop_safe_worker_init

    init = stop_safe_worker_init() if sys.argv[1] == "safe" else ignore_stop_signals
    loader = DataLoader(list(range(64)), batch_size=2, num_workers=2, persistent_workers=True, worker_init_fn=init)
    LEAKED = iter(loader)
    next(LEAKED)
    print(" ".join(str(w.pid) for w in LEAKED._workers), flush=True)
    """
)


def _run(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LEAKED_ITERATOR, mode], capture_output=True, text=True, timeout=60, check=False
    )


def _ended(pid: int, wait_s: float = 10.0) -> bool:
    """Whether process `pid` has ended: gone, or a zombie that whoever adopted it has not reaped yet."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_workers_ignore_sigterm_and_still_end_with_their_main_process() -> None:
    """The bare worker_init_fn hangs the exit (multiprocessing SIGTERMs, then joins, a worker that ignores it):
    CI's pytest finished its tests and then waited until the job's time ran out."""
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", LEAKED_ITERATOR, "bare"], capture_output=True, timeout=20, check=False)
    done = _run("safe")
    assert done.returncode == 0, done.stderr
    assert all(_ended(pid) for pid in map(int, done.stdout.split()))


def test_a_worker_survives_sigterm() -> None:
    from torch.utils.data import DataLoader

    from pixelbert_pl.data.workers import stop_safe_worker_init

    loader = DataLoader(list(range(8)), batch_size=1, num_workers=1, worker_init_fn=stop_safe_worker_init())
    iterator = iter(loader)
    assert next(iterator).tolist() == [0]
    os.kill(iterator._workers[0].pid, signal.SIGTERM)  # type: ignore[attr-defined]
    assert [batch.item() for batch in iterator] == list(range(1, 8))
