"""The installed package's requirements: ranges, never exact pins (a pin would replace a user's CUDA torch); the
exact versions this repo tests with live in constraints.txt, which the Makefile installs with."""

from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def test_no_requirement_is_pinned_to_one_version() -> None:
    pinned = [
        r for r in requires("pixelbert-pl") or [] if any(s.operator in ("==", "===") for s in Requirement(r).specifier)
    ]
    assert pinned == [], "pin these in constraints.txt, give install_requires a range"


def test_the_makefile_installs_with_the_constraints_it_names() -> None:
    constraints = [Requirement(line) for line in (ROOT / "constraints.txt").read_text().splitlines()
                   if line.strip() and not line.startswith("#")]  # fmt: skip
    assert {r.name for r in constraints} >= {"torch", "torchvision"}
    assert all(str(r.specifier).startswith("==") for r in constraints)
    installs = [line for line in (ROOT / "Makefile").read_text().splitlines() if "$(PIP)" in line and "-e " in line]
    assert installs and all("-c constraints.txt" in line for line in installs)
    ranges = {Requirement(r).name: Requirement(r).specifier for r in requires("pixelbert-pl") or []}
    assert all(ranges[r.name].contains(next(iter(r.specifier)).version) for r in constraints)  # the pins are allowed


TRAINING_ONLY = (
    "pytorch-lightning", "lightning", "torchmetrics", "datasets", "torchdata", "tensorboard", "jsonargparse",
)  # fmt: skip


def test_training_packages_are_the_train_extra_only() -> None:
    """The installed distribution's METADATA (pip builds it from setup.cfg): serving needs none of these."""
    by_name: dict[str, list[Requirement]] = {}
    for line in requires("pixelbert-pl") or []:
        requirement = Requirement(line)
        by_name.setdefault(requirement.name, []).append(requirement)
    for name in TRAINING_ONLY:
        for requirement in by_name.get(name, []):
            assert requirement.marker is not None and requirement.marker.evaluate({"extra": "train"}), requirement
            assert not requirement.marker.evaluate({"extra": ""}), f"{requirement} is in the base install"
    assert "pytorch-lightning" in by_name and "torch" in by_name
    assert all(r.marker is None for r in by_name["torch"])
