"""The installed package's requirements: ranges, never exact pins (a pin would replace a user's CUDA torch); the
exact versions this repo tests with live in constraints.txt, which the Makefile installs with."""

from importlib.metadata import requires
from pathlib import Path

import pytest
import yaml
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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip install pixelbert-pl` installs, built offline from this checkout."""
    import shutil
    import subprocess
    import sys

    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in the environment")
    # From a copy: setuptools builds in the tree's build/, where files deleted from src/ linger and get packed.
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out)]
    done = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (built,) = out.glob("pixelbert_pl-*.whl")
    return built


def test_the_built_wheel_pins_nothing_and_needs_lightning_only_for_training(wheel: Path) -> None:
    """What `pip install pixelbert-pl` reads: the wheel's own METADATA."""
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    required = [Requirement(line.split(":", 1)[1].strip()) for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]  # fmt: skip
    assert required and not [r for r in required if any(s.operator in ("==", "===") for s in r.specifier)]
    base = {r.name for r in required if r.marker is None}
    assert base == {"torch", "torchvision", "transformers", "safetensors", "huggingface_hub", "pillow"}
    lightning = [r for r in required if r.name == "pytorch-lightning"]
    assert lightning and all(r.marker is not None and r.marker.evaluate({"extra": "train"}) for r in lightning)


# Run by the installed package, outside this checkout: each demo recipe's --print_config, in short.
_PRINT_INSTALLED = """
import contextlib, io, json, sys
import yaml
import pixelbert_pl
from pixelbert_pl.cli import main
from pixelbert_pl.harness import demo
printed = {"package": pixelbert_pl.__file__, "configs": str(demo.CONFIGS)}
for recipe in sorted(demo.CONFIGS.iterdir()):
    if recipe.name.endswith(".yaml"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main(["fit", "--config", str(recipe), "--print_config"])
        config = yaml.safe_load(out.getvalue())
        printed[recipe.name] = {"callbacks": [c["class_path"] for c in config["trainer"]["callbacks"]],
                                "name": config["trainer"]["logger"]["init_args"]["name"],
                                "preset": config["model"]["init_args"]["preset"]}
print(json.dumps(printed))
"""


def test_the_installed_demo_recipes_find_their_base_and_the_callbacks(wheel: Path, tmp_path: Path) -> None:
    """The wheel holds the CLI's callbacks.yaml and every file of the demo's configs/, and an installed package's
    demo recipes compose from its own base/cpu.yaml, with the callbacks of its own callbacks.yaml."""
    import json
    import os
    import subprocess
    import sys
    import zipfile

    package = ROOT / "src" / "pixelbert_pl"
    shipped = {str(p.relative_to(package.parent)) for p in (package / "harness" / "configs").rglob("*") if p.is_file()}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "pixelbert_pl/configs/callbacks.yaml" in names and shipped <= names, shipped - names
        archive.extractall(tmp_path / "site")  # what pip puts in site-packages
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _PRINT_INSTALLED], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout.splitlines()[-1])
    assert Path(printed.pop("package")).is_relative_to(tmp_path / "site")
    assert Path(printed.pop("configs")).is_relative_to(tmp_path / "site")
    callbacks = [c["class_path"] for c in yaml.safe_load((package / "configs" / "callbacks.yaml").read_text())]
    recipes = {p.name for p in (package / "harness" / "configs").glob("*.yaml")}
    assert printed.keys() == recipes
    for name, config in printed.items():
        assert config["callbacks"] == callbacks and config["preset"] == "pixelbert_tiny", name  # base/cpu.yaml's
        assert config["name"] == name.removesuffix(".yaml").replace("_shapes", ""), name
