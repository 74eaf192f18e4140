"""The installed package's requirements: ranges, never exact pins (a pin would replace a user's CUDA torch); the
exact versions this repo tests with live in constraints.txt, which the Makefile installs with."""

from importlib.metadata import requires
from pathlib import Path

import pytest
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


def test_the_built_wheel_pins_nothing_and_needs_lightning_only_for_training(tmp_path) -> None:
    """What `pip install pixelbert-pl` reads: the wheel's own METADATA (built offline from this checkout)."""
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in the environment")
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    done = subprocess.run([*command, str(ROOT)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("pixelbert_pl-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    required = [Requirement(line.split(":", 1)[1].strip()) for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]  # fmt: skip
    assert required and not [r for r in required if any(s.operator in ("==", "===") for s in r.specifier)]
    base = {r.name for r in required if r.marker is None}
    assert base == {"torch", "torchvision", "transformers", "safetensors", "huggingface_hub", "pillow"}
    lightning = [r for r in required if r.name == "pytorch-lightning"]
    assert lightning and all(r.marker is not None and r.marker.evaluate({"extra": "train"}) for r in lightning)
