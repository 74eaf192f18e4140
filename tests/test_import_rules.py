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
    # configs/: package data, no module (the CLI's default callbacks)
    assert parts - set(LIBRARY) - {"harness", "__init__", "__main__", "configs"} == set()


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in the file, TYPE_CHECKING blocks included). `from a
    import b` counts as `a.b` when that is a module, else `a`; a module's own parent packages are left out, as Python
    imports them before it in any case."""
    files = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        names = [name for _, name in imports(path, package)]
        targets = set()
        for name in names:
            if name in files and not any(other.startswith(name + ".") and other in files for other in names):
                targets.add(name)  # `from a import b` with b a module: `a.b` is the edge, not `a`
        graph[module] = {t for t in targets if t != module and not module.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others() -> None:
    """A cycle works or breaks with import order, and hides a layering mistake (issue 32: tasks/ranking.py and
    tasks/retrieval.py imported each other, one side under TYPE_CHECKING)."""
    assert cycles(import_graph()) == []


def test_the_cycle_check_sees_a_type_checking_cycle(tmp_path: Path) -> None:
    package = tmp_path / "pixelbert_pl"
    (package / "tasks").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tasks" / "__init__.py").write_text("")
    (package / "tasks" / "a.py").write_text("from pixelbert_pl.tasks.b import B\n")
    (package / "tasks" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pixelbert_pl.tasks.a import A\n"
    )
    assert cycles(import_graph(package)) == [["pixelbert_pl.tasks.a", "pixelbert_pl.tasks.b"]]
