"""DataLoader workers that outlive a stop signal long enough for the main process to save, and never its exit."""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import multiprocessing.util  # its atexit hook must be registered before ours (see below)
import signal
from collections.abc import Callable


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers' `worker_init_fn`: SIGTERM sent to the whole process group (as schedulers do) and Ctrl-C
    would kill the workers, and the main process would then fail on their death instead of finishing its step and
    saving; the main process alone acts on them (`checkpoints.FinalCheckpoint`) and ends its workers when it exits."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_safe_worker_init() -> Callable[[int], None]:
    """`ignore_stop_signals`, once the main process is sure to end such workers at its exit."""
    _kill_workers_at_exit()
    return ignore_stop_signals


@functools.cache
def _kill_workers_at_exit() -> None:
    # At exit, multiprocessing ends its daemonic children (DataLoader workers) with SIGTERM and then joins them: a
    # worker that ignores SIGTERM and whose loader was never shut down (an iterator still referenced) would be waited
    # on forever. atexit runs handlers last in, first out, so this one runs before multiprocessing's.
    atexit.register(_kill_daemonic_children)


def _kill_daemonic_children() -> None:
    for process in multiprocessing.active_children():
        if process.daemon:
            process.kill()
