"""The docs' code runs: every ```python fence of docs/*.md and README.md runs, in order, one process a page, in a
folder that holds what the pages name (tiny saved models, images, a vocabulary). A fence that cannot run here says why
on the line above it, `<!-- skip: REASON -->`, which this runner reads; a skip without a reason fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
SKIP = re.compile(r"<!--\s*skip:\s*(?P<reason>.*?)\s*-->")
OPEN = re.compile(r"^```(?P<info>\S*)")


@dataclass(frozen=True)
class Fence:
    page: Path
    line: int  # of the first code line, 1-based
    code: str
    skip: str | None  # the reason, or None: runs


def fences(page: Path) -> list[Fence]:
    """The top-level ```python fences of a page, each with the skip reason of the comment just above it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opened = OPEN.match(lines[i])
        if not opened:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if opened.group("info") == "python":
            above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            reason = SKIP.search(above)
            found.append(Fence(page, i + 2, "\n".join(lines[i + 1 : end]) + "\n", reason and reason.group("reason")))
        i = end + 1
    return found


ALL = [fence for page in PAGES for fence in fences(page)]
RUNNABLE = sorted({f.page for f in ALL if f.skip is None})

# What the pages name, made tiny: a WordPiece vocabulary, three images, and random tiny models saved as a user's
# would be (VQA, pre-training, NLVR2).
WORKSPACE = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    from PIL import Image

    from pixelbert_pl import PixelBertProcessor, ProcessingConfig
    from pixelbert_pl.models import (
        PixelBertForNLVR2, PixelBertForPreTraining, PixelBertForQuestionAnswering, create_model,
    )
    from pixelbert_pl.processing import write_wordpiece_vocab

    root = Path(sys.argv[1])
    texts = ["what colour is the circle? what is the man holding? a red circle left of a blue square",
             "a dog on a couch, there are two dogs in total"]
    vocab = write_wordpiece_vocab(texts, root / "vocab.txt")
    g = torch.Generator().manual_seed(0)
    for name in ("photo", "left", "right"):
        pixels = (torch.rand(64, 80, 3, generator=g) * 255).byte().numpy()
        Image.fromarray(pixels).save(root / f"{name}.jpg")
    processing = ProcessingConfig(tokenizer=str(vocab), image_min_size=64, image_max_size=64)
    processor = PixelBertProcessor.from_config(processing)
    torch.manual_seed(0)

    def backbone():
        return create_model("pixelbert_tiny", processing=processing, vocab_size=len(processor.tokenizer))

    PixelBertForQuestionAnswering(backbone(), ["red", "blue", "yes", "no", "2"]).save_pretrained(
        root / "my-vqa-model", processor
    )
    PixelBertForPreTraining(backbone()).save_pretrained(root / "my-pretrained-model", processor)
    PixelBertForNLVR2(backbone()).save_pretrained(root / "my-nlvr2-model", processor)
    """
)

# Runs a page's fences in order in one namespace (as a reader would, top to bottom); a traceback names the page and
# its line numbers.
RUNNER = textwrap.dedent(
    """
    import json, sys
    namespace = {"__name__": "__main__"}
    for page, line, code in json.load(open(sys.argv[1])):
        exec(compile("\\n" * (line - 1) + code, page, "exec"), namespace)
    """
)


def _env(workspace: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["HF_DATASETS_CACHE"] = str(workspace / ".datasets-cache")
    env["PYTHONPATH"] = os.pathsep.join([str(workspace), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs-workspace")
    done = subprocess.run(
        [sys.executable, "-c", WORKSPACE, str(root)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_python_fences_of_a_page_run(page: Path, workspace: Path, tmp_path: Path) -> None:
    import json

    work = tmp_path / "cwd"
    subprocess.run(["cp", "-r", str(workspace), str(work)], check=True)
    blocks = [(str(f.page.relative_to(ROOT)), f.line, f.code) for f in ALL if f.page == page and f.skip is None]
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tmp_path / "blocks.json")],
        cwd=work, env=_env(work), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{page.name}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


def test_every_fence_runs_or_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    skipped = [f for f in ALL if f.skip is not None]
    indented = [f"{p.name}:{i}" for p in PAGES for i, line in enumerate(p.read_text().splitlines(), 1)
                if re.match(r"\s+```python", line)]  # fmt: skip
    assert indented == [], "an indented python fence escapes the runner: put it at the top level"
    assert all(f.skip for f in skipped), [f"{f.page.name}:{f.line}" for f in skipped if not f.skip]
    assert RUNNABLE, "no runnable python fence found: the runner reads nothing"
    with capsys.disabled():
        print(f"\ndocs fences: {len(ALL) - len(skipped)} run, {len(skipped)} skipped")
        for f in skipped:
            print(f"  skipped {f.page.relative_to(ROOT)}:{f.line}: {f.skip}")


def test_the_runner_reads_fences_and_skip_reasons(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\nx = 1\n```\n\n<!-- skip: needs COCO -->\n```python\nopen('/data/coco')\n```\n\n"
        "```bash\nmake demo\n```\n"
    )
    found = fences(page)
    assert [(f.line, f.code, f.skip) for f in found] == [
        (4, "x = 1\n", None),
        (9, "open('/data/coco')\n", "needs COCO"),
    ]
