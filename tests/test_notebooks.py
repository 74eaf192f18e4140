"""Both notebooks run top to bottom on the CPU (small budgets), in a kernel of this environment, and write only
into the folder they are given (a run that left its corpus in /tmp filled CI's disk over repeated runs)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize(
    ("name", "env"),
    [
        ("quickstart.ipynb", {"QUICKSTART_STEPS": "4"}),
        ("attention.ipynb", {"ATTENTION_STEPS": "4", "PIXELBERT_CHECKPOINT": "no-such.ckpt"}),
    ],
)
def test_notebook_executes(name, env, tmp_path, monkeypatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("QUICKSTART_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("ATTENTION_DIR", str(tmp_path / "work"))
    scratch = tmp_path / "tmp"  # the kernel's temporary folder: a notebook given its folder leaves nothing here
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, "the notebook shows images"
    assert (tmp_path / "work").is_dir()
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("pixelbert-")], "wrote outside its folder"
