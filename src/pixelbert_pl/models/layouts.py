"""The older checkpoint and export layouts this version still reads, in one place; each has a test in
tests/test_user_paths.py. A user can hold files of these layouts today: what was written before them (the model
config holding the preprocessing, before `ProcessingConfig`) is not read.

1. Checkpoints from before the task models: the Lightning task held the backbone and heads itself, so its
   state_dict keys are the task model's (`model.*`, `vqa_head.*`) with no `net.` prefix, and the task model's name
   and arguments are not recorded: they follow from the Lightning task's name and hyper-parameters
   (`LEGACY_TASKS`, `legacy_task_args`).
2. Exports from before the task models: config.json names the Lightning task ("task": "VQATask") and its
   arguments ("task_args"), and the processing is config.json's (no processor_config.json).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

TASK_MODEL_PREFIX = "net."  # where a Lightning task keeps its task model (`PixelBertTask.net`)
# Lightning task -> the task model it held (layouts 1 and 2); any other name was a user's task, not readable here.
LEGACY_TASKS = {
    "PretrainTask": "PixelBertForPreTraining",
    "VQATask": "PixelBertForQuestionAnswering",
    "NLVR2Task": "PixelBertForNLVR2",
    "RetrievalTask": "PixelBertForImageTextRetrieval",
}


def legacy_task(name: str, args: Mapping[str, Any], source: str) -> tuple[str, dict[str, Any]]:
    """(task model name, its arguments) for a Lightning task `name` (a class name or LightningCLI's class path) and
    its hyper-parameters, as layouts 1 and 2 record them."""
    task = name.rsplit(".", 1)[-1]
    if task not in LEGACY_TASKS:
        raise ValueError(
            f"{source}: written for the task {name!r} before task models were saved with it, and only the package's "
            f"own tasks ({', '.join(LEGACY_TASKS)}) are read from that layout: load it with its Lightning task "
            "(`pixelbert validate --ckpt_path`) and save it again"
        )
    if task == "PretrainTask":
        args = {
            "mlm": float(args.get("mlm_weight", 1.0)) > 0, "itm": float(args.get("itm_weight", 1.0)) > 0,
            "sample_pixels": args.get("sample_pixels", True), "skip_pixel_rows": args.get("skip_pixel_rows", False),
        }  # fmt: skip
    elif task == "VQATask":
        args = {"answer_vocab": list(args["answer_vocab"])}
    elif task == "RetrievalTask":
        args = {"hard_negatives": args.get("hard_negatives", 5), "eval_chunk": args.get("eval_chunk", 1024)}
    else:
        args = {}
    return LEGACY_TASKS[task], dict(args)


def task_model_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Lightning checkpoint's state_dict as its task model's: the `net.` entries, prefix removed; in layout 1,
    every entry but the metrics' state."""
    if any(key.startswith(TASK_MODEL_PREFIX) for key in state_dict):
        n = len(TASK_MODEL_PREFIX)
        return {key[n:]: value for key, value in state_dict.items() if key.startswith(TASK_MODEL_PREFIX)}
    return {key: value for key, value in state_dict.items() if not key.startswith("metrics.")}


def upgrade_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Lightning task's state_dict in today's layout: layout 1's task-model keys go under `net.`."""
    if any(key.startswith(TASK_MODEL_PREFIX) for key in state_dict):
        return dict(state_dict)
    return {
        (key if key.startswith("metrics.") else TASK_MODEL_PREFIX + key): value for key, value in state_dict.items()
    }
