"""RNGStateCheckpoint: the current layout round-trips; any other layout or world size is reported, not restored."""

import logging
from types import SimpleNamespace

import pytest
import torch

from pixelbert_pl.tasks.callbacks import RNG_KEY, RNGStateCheckpoint


def _trainer(world: int = 1, rank: int = 0) -> SimpleNamespace:
    return SimpleNamespace(world_size=world, global_rank=rank)


def _module(world: int = 1) -> SimpleNamespace:
    return SimpleNamespace(trainer=_trainer(world), device=torch.device("cpu"))


def _saved_and_next_draw() -> tuple[dict, torch.Tensor]:
    callback, checkpoint = RNGStateCheckpoint(), {}
    callback.on_save_checkpoint(_trainer(), _module(), checkpoint)
    return checkpoint, torch.rand(4)


def test_saved_states_restore_the_draws_that_followed_them() -> None:
    torch.manual_seed(0)
    checkpoint, expected = _saved_and_next_draw()
    assert checkpoint[RNG_KEY]["torch"].shape[0] == 1  # one row per process
    torch.rand(7)
    RNGStateCheckpoint().on_load_checkpoint(_trainer(), _module(), checkpoint)
    assert torch.equal(torch.rand(4), expected)


def test_a_row_per_process_restores_this_ranks_row() -> None:
    torch.manual_seed(0)
    other = torch.get_rng_state()
    torch.rand(5)
    checkpoint, expected = _saved_and_next_draw()
    checkpoint[RNG_KEY]["torch"] = torch.stack([other, checkpoint[RNG_KEY]["torch"][0]])
    RNGStateCheckpoint().on_load_checkpoint(_trainer(2, 1), _module(2), checkpoint)
    assert torch.equal(torch.rand(4), expected)


LAYOUT = "not in the layout RNGStateCheckpoint writes"


@pytest.mark.parametrize(
    ("states", "message"),
    [
        ({"torch": torch.get_rng_state()}, LAYOUT),  # one process's state, without its row
        ({"torch": torch.get_rng_state()[None], "cuda": [torch.zeros(16, dtype=torch.uint8)]}, LAYOUT),  # per device
        ({"cuda": torch.zeros(1, 16, dtype=torch.uint8)}, LAYOUT),  # no CPU state
        ([torch.get_rng_state()], LAYOUT),
        ({"torch": torch.stack([torch.get_rng_state()] * 2)}, "for 2 processes, this run has 1: not restored"),
    ],
    ids=["one-dim", "cuda-list", "no-torch", "list", "two-processes"],
)
def test_another_layout_or_world_size_is_reported_and_nothing_restored(states, message, caplog) -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="pixelbert_pl.tasks.callbacks"):
        RNGStateCheckpoint().on_load_checkpoint(_trainer(), _module(), {RNG_KEY: states})
    assert message in caplog.text
    assert torch.equal(torch.get_rng_state(), before)


def test_a_checkpoint_without_states_restores_nothing(caplog) -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    RNGStateCheckpoint().on_load_checkpoint(_trainer(), _module(), {})
    assert torch.equal(torch.get_rng_state(), before) and caplog.text == ""
