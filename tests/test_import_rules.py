"""The package's layering, read from the source (every import, also those inside functions): a newcomer may rely
on it, and a change that breaks it fails here rather than in a circular import later."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pixelbert_pl"
LIBRARY = ("models", "data", "tasks", "metrics", "processing", "cli", "inference", "checkpoints", "export",
           "check_data", "make_shards", "visualize", "distributed", "run_lock")  # fmt: skip
# subpackage -> what it must not import (of the package or outside it)
FORBIDDEN = {
    "processing": ("pixelbert_pl.", "pytorch_lightning", "lightning"),  # a leaf
    "models": ("pixelbert_pl.data", "pixelbert_pl.tasks", "pixelbert_pl.cli", "pytorch_lightning", "lightning"),
    "metrics": ("pixelbert_pl.models", "pixelbert_pl.tasks"),
    "data": ("pixelbert_pl.tasks", "pixelbert_pl.models"),
}
ALLOWED_INSIDE = {"processing": ("pixelbert_pl.processing",)}


def imports(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) of every import; `from a import b` counts as `a` and `a.b` (b may be a submodule)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolved against the file's own package
                base = path.relative_to(package.parent).parent.parts
                module = ".".join([*base[: len(base) - node.level + 1], *([module] if module else [])])
            found += [(node.lineno, module), *((node.lineno, f"{module}.{a.name}") for a in node.names)]
    return found


def modules_of(part: str) -> list[Path]:
    target = PACKAGE / part
    return sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]


def violations(part: str, forbidden: tuple[str, ...]) -> list[str]:
    allowed = ALLOWED_INSIDE.get(part, ())
    return [
        f"{path.relative_to(PACKAGE)}:{line} imports {name}"
        for path in modules_of(part)
        for line, name in imports(path)
        if (name + ".").startswith(tuple(f if f.endswith(".") else f + "." for f in forbidden))
        and not (name + ".").startswith(tuple(a + "." for a in allowed))
    ]


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_layers_import_only_what_they_may(part: str) -> None:
    assert violations(part, FORBIDDEN[part]) == []


@pytest.mark.parametrize("part", LIBRARY)
def test_the_library_never_imports_the_demo_harness(part: str) -> None:
    assert violations(part, ("pixelbert_pl.harness",)) == []


def test_the_rules_see_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    package = tmp_path / "pixelbert_pl"
    source = package / "models" / "probe.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from pixelbert_pl import harness\n    import pixelbert_pl.processing.images\n"
                      "    from ..tasks import base\n")  # fmt: skip
    assert [name for _, name in imports(source, package)] == [
        "pixelbert_pl", "pixelbert_pl.harness", "pixelbert_pl.processing.images", "pixelbert_pl.tasks",
        "pixelbert_pl.tasks.base",
    ]  # fmt: skip


def test_every_module_belongs_to_the_library_or_the_harness() -> None:
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.glob("*") if p.name != "__pycache__"}
    assert parts - set(LIBRARY) - {"harness", "__init__", "__main__"} == set()
