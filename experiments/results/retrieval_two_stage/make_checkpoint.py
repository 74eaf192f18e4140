"""The fine-tuned model of experiments/results/retrieval_two_stage.md: `make demo`'s retrieval fine-tuning (seed 0),
from its pre-training checkpoint, saved (the demo keeps no retrieval checkpoint).

    python experiments/results/retrieval_two_stage/make_checkpoint.py PRETRAINED OUT ROOT

PRETRAINED: demo-output/pretrain.ckpt; OUT: a folder for retrieval.ckpt; ROOT: demo-output/shapesworld.
"""

import json
import sys
import time

from pixelbert_pl.harness.demo import CONFIGS, _cli
from pixelbert_pl.models.checkpoint_reader import load_checkpoint

pretrained, out, root = sys.argv[1:4]
hparams = load_checkpoint(pretrained)["hyper_parameters"]
sys.argv = sys.argv[:1]  # LightningCLI reads its own arguments below
start = time.perf_counter()
cli = _cli([
    "fit", "--config", str(CONFIGS / "retrieval_shapes.yaml"), "--data.init_args.root", root,
    "--trainer.logger.init_args.save_dir", out, "--trainer.logger.init_args.name", "retrieval",
    "--model.init_args.init_from", pretrained, "--model.init_args.preset", hparams["preset"],
    "--model.init_args.model_overrides", json.dumps(hparams.get("model_overrides") or {}),
])  # fmt: skip
print({k: float(v) for k, v in cli.trainer.callback_metrics.items()}, time.perf_counter() - start)
cli.trainer.save_checkpoint(f"{out}/retrieval.ckpt", weights_only=True)
