"""Bad samples in training data: skipped, counted, and bounded.

Real corpora hold files that cannot be decoded (truncated, empty, HTML saved as .jpg, decompression bombs, missing).
A training item whose image is unreadable is replaced by the next readable record of the dataset (deterministic,
so a resumed run sees the same substitutes), which keeps every rank's batches full and equal in number, so DDP
never waits on a batch one rank dropped. Each drawn sample that had to be replaced counts once in `SkipCounter`
(however many bad records its substitute search met), which DataLoader workers share with the main process; a run
stops with `TooManyBadSamplesError` once the replaced fraction of the samples drawn passes `max_fraction`. Each
process remembers the files it found unreadable: they are logged once and never decoded again. Evaluation datasets
never substitute (it would change the metric): there an unreadable image is an error naming the file, and
`pixelbert-check-data` finds such files before a run.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
from torch.utils.data import get_worker_info

logger = logging.getLogger(__name__)
_SLOTS = 257  # the main process and up to 256 DataLoader workers, each counting in its own row (no lock needed)


class TooManyBadSamplesError(RuntimeError):
    """More than the allowed fraction of training samples could not be read."""


class SkipCounter:
    """Samples drawn and replaced, in shared memory so that every DataLoader worker's counts reach the main process;
    and this process's unreadable files (`bad_files`, path -> reason, each logged once).

    Args:
        max_fraction: stop (raise `TooManyBadSamplesError`) once replaced / drawn exceeds this...
        min_samples: ...after at least this many draws, so that one bad file among the first few does not stop a run.
    """

    def __init__(self, max_fraction: float = 0.01, min_samples: int = 100) -> None:
        if not 0 <= max_fraction <= 1:
            raise ValueError(f"max_skipped_fraction={max_fraction}: expected a fraction in [0, 1]")
        self.max_fraction, self.min_samples = max_fraction, min_samples
        self.counts = torch.zeros(_SLOTS, 2, dtype=torch.long).share_memory_()  # per slot: drawn, replaced
        self.bad_files: dict[str, str] = {}  # this process's unreadable files and why (the counts are in `counts`)
        self.reasons: Counter[str] = Counter()  # this process's distinct bad files by kind of reason

    def _slot(self) -> int:
        info = get_worker_info()
        return 0 if info is None else 1 + info.id % (_SLOTS - 1)

    def __getstate__(self) -> dict[str, object]:
        # A pickled NumPy view would arrive in a worker as a private copy; each process makes its own (`served`).
        return {k: v for k, v in self.__dict__.items() if k != "_view"}

    def served(self) -> None:
        """One sample drawn and served, as itself or by a substitute (then `replaced` follows)."""
        # Through a NumPy view of the shared tensor: torch's per-call indexing overhead would dominate.
        view = self.__dict__.get("_view")
        if view is None:
            view = self._view = self.counts.numpy()
        view[self._slot(), 0] += 1

    def unreadable(self, path: str, reason: str) -> None:
        """Note a file found unreadable; logged the first time this process meets it, not at each retry."""
        if path not in self.bad_files:
            self.bad_files[path] = reason
            self.reasons[reason.split(":")[0]] += 1
            logger.warning("unreadable training image %s (%s); samples using it are replaced", path, reason)

    def replaced(self, path: str, reason: str) -> None:
        """The sample just served stood in for a drawn one whose image (`path`) is unreadable: count it once, and
        stop the run when the replaced fraction of the samples drawn is above `max_fraction`."""
        self.counts[self._slot(), 1] += 1
        drawn, replaced = self.totals()
        if drawn >= self.min_samples and replaced > self.max_fraction * drawn:
            raise TooManyBadSamplesError(
                f"{replaced} of {drawn} training samples drawn had an unreadable image ({replaced / drawn:.1%} > "
                f"max_skipped_fraction={self.max_fraction}); last: {path} ({reason}). Run pixelbert-check-data on "
                "the config for the full list"
            )

    def totals(self) -> tuple[int, int]:
        """(samples drawn, samples replaced) over all processes."""
        drawn, replaced = self.counts.sum(dim=0).tolist()
        return int(drawn), int(replaced)
