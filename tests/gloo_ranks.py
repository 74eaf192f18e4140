"""Run a function on several CPU processes joined by gloo (`torch.distributed`), as DDP ranks are, and gather what
each returns: `on_gloo_ranks(fn, args, folder)` gives [rank 0's result, rank 1's, ...]."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank(rank: int, world: int, fn: Callable[..., Any], args: tuple, init_file: str, out: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, fn(rank, world, *args))
    if rank == 0:
        torch.save(gathered, out)
    dist.destroy_process_group()


def on_gloo_ranks(fn: Callable[..., Any], args: tuple, folder: Path, world: int = 2) -> list[Any]:
    """`fn(rank, world, *args)` on `world` spawned processes (`fn` a module-level function: it is pickled by name);
    its results must be ints, floats, bools, strings and lists or tuples of them."""
    out = folder / "gathered.pt"
    mp.spawn(_rank, args=(world, fn, args, str(folder / "init"), str(out)), nprocs=world, join=True)
    return torch.load(out)
