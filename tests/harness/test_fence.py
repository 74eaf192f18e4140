"""The fence: no module of the library imports the harness (the harness builds on the library, never the reverse)."""

import ast
from pathlib import Path

import pixelbert_pl

PACKAGE = Path(pixelbert_pl.__file__).parent


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # a relative import, resolved against the file's own package
                base = path.relative_to(PACKAGE.parent).parent.parts
                module = ".".join([*base[: len(base) - node.level + 1], *([module] if module else [])])
            names += [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return names


def test_the_library_imports_nothing_from_the_harness() -> None:
    library = [p for p in PACKAGE.rglob("*.py") if "harness" not in p.relative_to(PACKAGE).parts]
    assert len(library) > 30
    offending = {
        str(path.relative_to(PACKAGE)): name
        for path in library
        for name in _imports(path)
        if name == "pixelbert_pl.harness" or name.startswith("pixelbert_pl.harness.")
    }
    assert not offending
