"""ShapesWorld pre-training from shards vs from its in-memory files, same recipe, same start, same steps.

Both arms run the demo's main pre-training recipe (`pretrain_shapes.yaml`) through `pixelbert fit` from the same
warm-up weights for `--steps` steps; one reads the corpus's COCO-format files (ShapesWorldDataModule), the other
the Parquet shards `pixelbert-make-shards` writes of the same records (StreamingPretrainDataModule, one shard per
`--records-per-shard` images). Both are scored by the demo's evaluator on ShapesWorld val.

    python experiments/streaming_vs_files.py --out /tmp/svf --warmup demo-output/pretrain_warmup.ckpt \
      --corpus demo-output/shapesworld --steps 1400
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

import yaml

from pixelbert_pl.check_data import read_recipe
from pixelbert_pl.harness import demo
from pixelbert_pl.harness.datamodules import ShapesWorldDataModule
from pixelbert_pl.make_shards import main as make_shards


def _recipe_data() -> dict:
    return read_recipe(str(demo.CONFIG))["data"]["init_args"]  # with its base's (base/cpu.yaml)


def stream_section(shards: Path, corpus: Path) -> dict:
    """The recipe's data settings, read from shards instead of the corpus's files."""
    files = _recipe_data()
    keep = ("image_min_size", "image_max_size", "batch_size", "captions_per_image", "mlm_probability",
            "mlm_word_probabilities", "num_workers", "seed")  # fmt: skip
    init = {k: files[k] for k in keep if k in files}
    init.update(shards=str(shards), tokenizer=str(corpus / "vocab.txt"), val_split=None)
    # ShapesWorldDataModule's own default text length (the recipe does not set it).
    init["max_text_length"] = inspect.signature(ShapesWorldDataModule).parameters["max_text_length"].default
    return {"class_path": "pixelbert_pl.data.StreamingPretrainDataModule", "init_args": init}


def run_arm(name: str, out: Path, corpus: Path, warmup: Path, steps: int, data: list[str]) -> dict:
    start = time.perf_counter()
    cli = demo._cli([
        "fit", "--config", str(demo.CONFIG), "--trainer.logger.init_args.save_dir", str(out / name),
        "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
        "--trainer.limit_val_batches", "0", "--model.init_args.init_from", str(warmup), *data,
    ])  # fmt: skip
    seconds = time.perf_counter() - start
    files = ShapesWorldDataModule(root=str(corpus), **{k: v for k, v in _recipe_data().items() if k != "root"})
    scores = demo.evaluate(cli.model, files)
    keep = ("itm_accuracy", "itm_hard_negative_accuracy", "mlm_attribute_accuracy", "mlm_colour_accuracy",
            "mlm_shape_accuracy")  # fmt: skip
    return {"steps": int(cli.trainer.global_step), "seconds": round(seconds, 1), **{k: scores[k] for k in keep}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True, help="a ShapesWorld corpus (the demo's)")
    parser.add_argument("--warmup", type=Path, required=True, help="the demo's pretrain_warmup.ckpt")
    parser.add_argument("--steps", type=int, default=1400)
    parser.add_argument("--records-per-shard", type=int, default=100)
    args = parser.parse_args()
    shards = args.out / "parquet"
    settings = {k: v for k, v in _recipe_data().items() if k != "root"}
    section = {"class_path": "pixelbert_pl.harness.datamodules.ShapesWorldDataModule",
               "init_args": {**settings, "root": str(args.corpus)}}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    config = args.out / "files_data.yaml"
    config.write_text(yaml.safe_dump({"data": section}))
    assert make_shards(["--config", str(config), "--out", str(shards), "--records-per-shard",
                        str(args.records_per_shard)]) == 0  # fmt: skip
    # Shards hold no one-word twins of captions, so the files arm draws its ITM negatives as the shards arm does.
    files = ["--data.init_args.root", str(args.corpus), "--data.init_args.hard_negative_probability", "0"]
    results = {
        "files": run_arm("files", args.out, args.corpus, args.warmup, args.steps, files),
        "shards": run_arm("shards", args.out, args.corpus, args.warmup, args.steps,
                          ["--data", json.dumps(stream_section(shards, args.corpus))]),
    }  # fmt: skip
    print(json.dumps(results, indent=2))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
