"""`<run>/checkpoints.lock`: one live `pixelbert fit` per run name.

Checkpoints go to one folder per run name (`checkpoints.py`), so two runs started with one name would write into
one folder: numbered checkpoints of one run named in the other's state, `best.ckpt` from whichever saved last, and
`--ckpt_path last` picking the newest file of either. Lightning has no guard against that, hence this lock file,
taken by `pixelbert fit` only (validate and predict of a live run stay allowed).

The file holds the owner's pid, host and process start time. A lock whose owner is gone (kill -9, a lost node on
this host) is taken over with a warning, so `--ckpt_path last` after a crash needs no clean-up; a lock held on
another host is refused, naming the file to delete if that run is dead.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
LOCK_SUFFIX = ".lock"  # beside the checkpoint folder, not in it: Lightning warns about a non-empty one
# What AtomicCheckpointIO writes before its rename: `.<name>.<pid>.tmp`.
TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")


class RunInUseError(RuntimeError):
    """Another live `pixelbert fit` holds the run's lock."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a live owner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name before ")" may hold spaces


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return started is None or _start_time(pid) in (None, started)


class RunLock:
    """The lock of the run whose checkpoints go to `folder` (`<folder>.lock`); `acquire()` then `release()`."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder.with_name(self.folder.name + LOCK_SUFFIX)
        self._held = False

    def owner(self) -> dict[str, Any]:
        pid = os.getpid()
        return {"pid": pid, "host": socket.gethostname(), "started": _start_time(pid), "since": time.time()}

    def acquire(self) -> None:
        """Take the lock, or raise `RunInUseError` naming its live owner; then remove temporary files that dead
        writers left in the folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        me = self.owner()
        for _ in range(3):  # another process may take over a dead owner's lock between our read and our write
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_dead(me)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._held = True
            self._remove_stale_temporaries()
            return
        raise RunInUseError(f"could not take {self.path}: other runs keep taking it")

    def _take_over_if_dead(self, me: dict[str, Any]) -> None:
        try:
            held = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return  # released meanwhile
        except (OSError, ValueError):
            held = {}  # a lock cut short while written: its owner died writing it
        pid, host = held.get("pid"), held.get("host")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(held.get("since", 0)))
        if isinstance(pid, int) and host == me["host"] and _alive(pid, held.get("started")):
            raise RunInUseError(
                f"run folder {self.folder} is in use by a live `pixelbert fit` (pid {pid}, started {since}): give this "
                "run another name (--trainer.logger.init_args.name) or wait for that one to end"
            )
        if isinstance(pid, int) and host != me["host"]:
            raise RunInUseError(
                f"run folder {self.folder} is locked by `pixelbert fit` pid {pid} on host {host!r} (since {since}), "
                f"which cannot be checked from here: give this run another name, or delete {self.path} if that run "
                "is no longer running"
            )
        log.warning("taking over %s from pixelbert fit pid %s, which is no longer running (started %s)",
                    self.path, pid, since)  # fmt: skip
        self.path.unlink(missing_ok=True)

    def _remove_stale_temporaries(self) -> None:
        # Only this run writes here now: a temporary file of a dead pid is a save cut short by a kill.
        for path in self.folder.iterdir():
            match = TEMPORARY.match(path.name)
            if match and not _alive(int(match.group(1)), None):
                log.warning("removing %s, a checkpoint save cut short by a killed run", path)
                path.unlink(missing_ok=True)

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
