"""`make demo`: generate ShapesWorld, pre-train the tiny Pixel-BERT on the CPU, fine-tune it on VQA, NLVR2 and
retrieval, and score everything beside chance or a majority baseline.

    python -m pixelbert_pl.harness.demo --out demo-output [--seed N] [--stages pretrain,vqa,...] [pre-training flags]

Prints one table and writes it to `<out>/results.json`, plus `<out>/attention.png` (where a colour word looks).
Pre-training scores read the val split: ITM with negatives drawn as in training (a caption of another image that
is not one of this image's), ITM against hard negatives that differ from a true caption in one colour, shape or
relation word (no bar), and MLM on colour and shape words masked one at a time. Each fine-tuning runs its
`configs/*_shapes.yaml` from the pre-trained checkpoint, except NLVR2, which starts from the VQA
fine-tuning's weights (see FINETUNES); VQA also runs from scratch with the same budget, to show what pre-training
brings. `--seed N` (`make demo SEED=N`) seeds every stage's training (`seed_everything` and the DataModules'
`seed`: order, masking, negatives, dropout); the corpus (`generator_seed`) and the evaluation's draws stay fixed,
so a spread over seeds is the training's.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data import VQADataModule
from pixelbert_pl.data.captions import read_karpathy
from pixelbert_pl.data.pretraining import CaptionPretrainDataset
from pixelbert_pl.data.records import negative_caption, sample_rng
from pixelbert_pl.harness.datamodules import ShapesWorldDataModule
from pixelbert_pl.harness.shapes import COLOURS, SHAPES
from pixelbert_pl.models.checkpoint_reader import load_checkpoint
from pixelbert_pl.models.pixel_bert import PixelBertOutput
from pixelbert_pl.processing import ImageTransform
from pixelbert_pl.processing.images import load_image
from pixelbert_pl.processing.padding import pad_images, pad_token_rows
from pixelbert_pl.tasks.pretrain import PretrainTask

# Package data, so that an installed copy finds them as well as a checkout does.
CONFIGS = importlib.resources.files("pixelbert_pl.harness") / "configs"
CONFIG = CONFIGS / "pretrain_shapes.yaml"
WARMUP_CONFIG = CONFIGS / "pretrain_shapes_warmup.yaml"
# results.json section -> (config, the weights it starts from: "pretrain", "scratch" or another stage's).
# NLVR2 starts from VQA's weights (pre-training's when VQA is not run): VQA's yes/no and number questions teach the
# per-image facts that a few thousand statements cannot (experiments/results/design_notes.md). On real data, with
# 86K statements, `lightning_configs/nlvr2/nlvr2_r50.yaml` fine-tunes from pre-training, as the paper does.
FINETUNES = {
    "vqa": ("vqa_shapes.yaml", "pretrain"),
    "vqa_from_scratch": ("vqa_shapes.yaml", "scratch"),
    "nlvr2": ("nlvr2_shapes.yaml", "vqa"),
    "retrieval": ("retrieval_shapes.yaml", "pretrain"),
}
STAGES = ("pretrain", *FINETUNES)
EVAL_SEED = 0  # the evaluation's negatives, whatever seed trained: every seed is scored on the same pairs


class ShapesEvaluator:
    """Scores a pre-trained task on one ShapesWorld split; the CNN runs once per image for every score."""

    def __init__(
        self,
        task: PretrainTask,
        root: str | Path,
        transform: ImageTransform,
        tokenizer: PreTrainedTokenizerBase,
        split: str = "val",
    ) -> None:
        self.task = task.eval()
        self.model = task.model
        self.root = Path(root)
        self.records = read_karpathy(self.root / "karpathy.json", self.root, [split])
        self.tokenizer = tokenizer
        with torch.no_grad():
            images = [transform(load_image(r.image_path)) for r in self.records]
            values, mask = pad_images(images)
            self.pixels = self.model.encode_pixels(values, mask)

    @torch.no_grad()
    def _forward(self, rows: list[list[int]], image_index: list[int], chunk: int = 256) -> list[PixelBertOutput]:
        """[CLS] and text outputs for token rows, each paired with image `image_index[i]`."""
        outputs = []
        for start in range(0, len(rows), chunk):
            ids = pad_token_rows(rows[start : start + chunk], self.tokenizer.pad_token_id)
            index = torch.tensor(image_index[start : start + chunk])
            out = self.model(ids, ids != self.tokenizer.pad_token_id, pixel_tokens=self.pixels, image_index=index)
            outputs.append(out)
        return outputs

    def itm_match_probability(self, captions: Sequence[str], image_index: Sequence[int]) -> torch.Tensor:
        rows = self.tokenizer(list(captions), truncation=True, max_length=self.model.processing.max_text_length)
        outs = self._forward(rows["input_ids"], list(image_index))
        assert self.task.net.itm_head is not None  # evaluate() scores ITM only for a task with the head
        return torch.cat([self.task.net.itm_head(o.cls_output).softmax(-1)[:, 1] for o in outs])

    def itm_accuracy(self, dataset: CaptionPretrainDataset) -> float:
        """Every caption of each image, plus as many negatives drawn exactly as the training data draws them."""
        captions, labels, index = [], [], []
        for i, record in enumerate(self.records):
            rng = sample_rng(EVAL_SEED, 0, i)
            own = set(record.captions)
            negatives = [negative_caption(dataset.records, i, own, rng) for _ in record.captions]
            captions += [*record.captions, *negatives]
            labels += [1] * len(record.captions) + [0] * len(negatives)
            index += [i] * (len(record.captions) + len(negatives))
        prob = self.itm_match_probability(captions, index)
        return float(((prob > 0.5).long() == torch.tensor(labels)).float().mean())

    def hard_negative_accuracy(self) -> dict[str, float]:
        """Each true caption against its one-word-swapped false twins, per kind of swap: the share of pairs where
        the true caption gets the higher match probability (chance 0.5)."""
        hard = json.loads((self.root / "hard_negatives.json").read_text())["hard_negatives"]
        coco = json.loads((self.root / "captions.json").read_text())
        caption_text = {a["id"]: a["caption"] for a in coco["annotations"]}
        position = {int(r.image_id.split(":")[1]): i for i, r in enumerate(self.records)}
        captions: list[str]  # read (len) before its first append, so mypy cannot infer it
        captions, index, pairs = [], [], []  # pairs: (row of the true caption, row of the negative, kind)
        for entry in hard:
            if entry["image_id"] not in position:
                continue
            image = position[entry["image_id"]]
            true_row = len(captions)
            captions.append(caption_text[entry["caption_id"]])
            index.append(image)
            for negative in entry["negatives"]:
                pairs.append((true_row, len(captions), negative["kind"]))
                captions.append(negative["caption"])
                index.append(image)
        prob = self.itm_match_probability(captions, index)
        wins = torch.tensor([float(prob[t] > prob[n]) for t, n, _ in pairs])
        result = {"all": float(wins.mean())}
        for kind in sorted({k for _, _, k in pairs}):
            result[kind] = float(wins[torch.tensor([k == kind for _, _, k in pairs])].mean())
        return result

    def mlm_attribute_accuracy(self) -> dict[str, float]:
        """Mask each colour / shape word of each caption alone; predict it from the rest and the pixels."""
        vocab = self.tokenizer.get_vocab()
        groups = {"colour": {vocab[w] for w in COLOURS}, "shape": {vocab[w] for w in SHAPES}}
        rows, index, targets, positions, kinds = [], [], [], [], []
        for i, record in enumerate(self.records):
            for caption in record.captions:
                ids = self.tokenizer(caption, truncation=True, max_length=self.model.processing.max_text_length)
                ids = ids["input_ids"]
                for pos, tok in enumerate(ids):
                    kind = next((k for k, members in groups.items() if tok in members), None)
                    if kind is None:
                        continue
                    masked = list(ids)
                    masked[pos] = self.tokenizer.mask_token_id
                    rows.append(masked)
                    index.append(i)
                    targets.append(tok)
                    positions.append(pos)
                    kinds.append(kind)
        correct_all, start = [], 0
        assert self.task.net.mlm_head is not None  # evaluate() scores MLM only for a task with the head
        for out in self._forward(rows, index):
            assert out.text_output is not None  # _forward leaves the model's default outputs="all"
            n = out.text_output.shape[0]
            at = torch.tensor(positions[start : start + n])
            hidden = out.text_output[torch.arange(n), at]
            predicted = self.task.net.mlm_head(hidden).argmax(-1)
            correct_all.append(predicted == torch.tensor(targets[start : start + n]))
            start += n
        correct = torch.cat(correct_all).float()
        stats: dict[str, float] = {}
        for kind in groups:
            picked = torch.tensor([k == kind for k in kinds])
            stats[f"{kind}_accuracy"] = float(correct[picked].mean())
        stats["accuracy"] = float(correct.mean())
        sizes = {"colour": len(COLOURS), "shape": len(SHAPES)}
        stats["chance"] = sum(1 / sizes[k] for k in kinds) / len(kinds)
        return stats


def evaluate(task: PretrainTask, data: ShapesWorldDataModule, split: str = "val") -> dict[str, object]:
    """Pre-training scores on a ShapesWorld split; a loss switched off (weight 0, no head) has no scores."""
    data.setup("validate")
    evaluator = ShapesEvaluator(task, data.root, data.transform, data.tokenizer, split)
    scores: dict[str, object] = {}
    if task.net.itm_head is not None:
        records = data.val_records if split == "val" else read_karpathy(data.root / "karpathy.json", data.root, [split])
        scores.update(
            itm_accuracy=evaluator.itm_accuracy(data.dataset(records)),
            itm_chance=0.5,
            itm_hard_negative_accuracy=evaluator.hard_negative_accuracy(),
            itm_hard_negative_chance=0.5,
        )
    if task.net.mlm_head is not None:
        mlm = evaluator.mlm_attribute_accuracy()
        scores.update(
            mlm_attribute_accuracy=mlm["accuracy"],
            mlm_colour_accuracy=mlm["colour_accuracy"],
            mlm_shape_accuracy=mlm["shape_accuracy"],
            mlm_attribute_chance=mlm["chance"],
            mlm_colour_chance=1 / len(COLOURS),
            mlm_shape_chance=1 / len(SHAPES),
        )
    return scores


def _cli(args: Sequence[str], run: bool = True):  # type: ignore[no-untyped-def]
    from pixelbert_pl.cli import main as cli_main

    sys.argv = sys.argv[:1]  # the demo's own flags are not LightningCLI's (it warns when it sees both)
    return cli_main(list(args), run=run)


def pretrain(
    out: Path,
    extra_args: Sequence[str] = (),
    checkpoint: str | None = None,
    warmup_args: Sequence[str] | None = (),
) -> tuple[dict[str, object], str]:
    """Pre-train with the demo configs (or load `checkpoint`), score on ShapesWorld val; returns the scores and the
    checkpoint the fine-tunings start from.

    Pre-training is a warm-up on one-shape scenes (WARMUP_CONFIG, flags `warmup_args`; None skips it) followed
    by the main run on the full corpus (CONFIG, flags `extra_args`), which starts from the warm-up's weights.
    Why: with several shapes in a scene, a masked shape word's target depends on which object the caption names,
    and a from-scratch model learns neither to see shape nor to find the object; one-shape scenes teach it to see
    shape first (experiments/results/design_notes.md)."""
    start = time.perf_counter()
    trained = checkpoint is None
    warmup_steps: int | None = None  # unknown for a loaded checkpoint, like its training time
    if trained:
        warmup_steps = 0
        init: list[str] = []
        if warmup_args is not None:
            warm = _cli([
                "fit", "--config", str(WARMUP_CONFIG),
                "--data.init_args.root", str(out / "shapesworld_one"),
                "--trainer.logger.init_args.save_dir", str(out),
                *warmup_args,
            ])  # fmt: skip
            warmup_steps = int(warm.trainer.global_step)
            warm.trainer.save_checkpoint(out / "pretrain_warmup.ckpt", weights_only=True)
            init = ["--model.init_args.init_from", str(out / "pretrain_warmup.ckpt")]
        cli = _cli([
            "fit", "--config", str(CONFIG),
            "--data.init_args.root", str(out / "shapesworld"),
            "--trainer.logger.init_args.save_dir", str(out),
            *init,
            *extra_args,
        ])  # fmt: skip
        task, steps = cli.model, int(cli.trainer.global_step)
        checkpoint = str(out / "pretrain.ckpt")
        cli.trainer.save_checkpoint(checkpoint, weights_only=True)
    else:
        cli = _cli(["--config", str(CONFIG), "--data.init_args.root", str(out / "shapesworld"), *extra_args], run=False)
        assert checkpoint is not None  # trained is False
        task = type(cli.model).load_from_checkpoint(checkpoint, map_location="cpu")
        steps = int(load_checkpoint(checkpoint)["global_step"])
    train_seconds = round(time.perf_counter() - start, 1)
    scores = evaluate(task, cli.datamodule)
    scores.update(
        warmup_steps=warmup_steps,
        train_steps=steps,
        train_seconds=train_seconds if trained else None,
        checkpoint=checkpoint,
    )
    save_attention_map(task, cli.datamodule, out / "attention.png")
    scores["grounding"] = grounding(task, cli.datamodule)
    return scores, checkpoint


def grounding(task: PretrainTask, data: ShapesWorldDataModule) -> dict[str, object]:
    """The pointing game on val (`grounding.py`): headline with attention averaged over layers and heads (no
    choice made on the evaluation data), then each layer."""
    from pixelbert_pl.harness.grounding import pointing_games

    layers = range(task.model.config.num_hidden_layers)
    result, *by_layer = pointing_games(task.model, data.root, data.tokenizer, data.transform, [None, *layers])
    result["by_layer"] = {
        str(layer): {k: v for k, v in scores.items() if k.endswith("rate")}
        for layer, scores in zip(layers, by_layer, strict=True)
    }
    return result


def save_attention_map(task: PretrainTask, data: ShapesWorldDataModule, path: Path) -> None:
    """The first val image with several shapes, and where the first colour word of its caption attends (mean over
    layers and heads, as the pointing game's headline), side by side, 4x enlarged."""
    from PIL import Image

    from pixelbert_pl.visualize import overlay, word_attention

    records = read_karpathy(data.root / "karpathy.json", data.root, ["val"])
    colour_ids = {data.tokenizer.convert_tokens_to_ids(c) for c in COLOURS}
    for record in records:
        caption = next((c for c in record.captions if c.startswith("the ")), None)
        if caption is None:
            continue
        ids = data.tokenizer(caption, return_tensors="pt")["input_ids"]
        position = next(i for i, t in enumerate(ids[0].tolist()) if t in colour_ids)
        image = load_image(record.image_path)
        pixels, mask = pad_images([data.transform(image)])
        heat = word_attention(task.model, ids, pixels, mask, word_position=position, layer=None)
        size = (image.width * 4, image.height * 4)
        panel = Image.new("RGB", (2 * size[0], size[1]))
        panel.paste(image.resize(size, Image.Resampling.NEAREST), (0, 0))
        panel.paste(overlay(image, heat).resize(size, Image.Resampling.NEAREST), (size[0], 0))
        path.parent.mkdir(parents=True, exist_ok=True)
        panel.save(path)
        (path.with_suffix(".txt")).write_text(
            f"{caption!r}: attention of {data.tokenizer.convert_ids_to_tokens(int(ids[0, position]))!r} "
            f"to the pixel tokens (mean over layers and heads); image {record.image_path}\n"
        )
        return


def vqa_majority_baseline(data: VQADataModule) -> float:
    """Accuracy on val (each question by its rule, as `VQATask` scores it) of always answering train's most frequent
    answer."""
    from collections import Counter

    from pixelbert_pl.metrics import normalize_vqa_answer, question_accuracy

    train = Counter(normalize_vqa_answer(r.multiple_choice_answer) for r in data.records("train"))
    answer = train.most_common(1)[0][0]
    val = data.records("val")
    return sum(question_accuracy(answer, r.answers) for r in val) / len(val)


def finetune(
    name: str,
    out: Path,
    pretrained: str,
    extra_args: Sequence[str] = (),
    root: Path | None = None,
    stage_checkpoints: dict[str, str] | None = None,
) -> dict[str, object]:
    """Fine-tune and validate one downstream task with its demo config, from the weights FINETUNES names: the
    `pretrained` checkpoint, random weights of the same architecture ("scratch"), or the checkpoint another stage
    left in `stage_checkpoints` (pre-training's when that stage did not run). The stage's own weights are saved to
    `<out>/<name>.ckpt` and added to `stage_checkpoints`. Returns the metrics as results.json reports them, and
    `init_from`: which weights it started from. Every score is a fraction in [0, 1], as the metrics log it."""
    config, source = FINETUNES[name]
    stage_checkpoints = {} if stage_checkpoints is None else stage_checkpoints
    if source == "scratch":
        init_from, started = None, "scratch"
    elif source in stage_checkpoints:
        init_from, started = stage_checkpoints[source], source
    else:
        init_from, started = pretrained, "pretrain"
    start = time.perf_counter()
    # The backbone is pre-training's: follow its preset and overrides, which may differ from the YAML's (e.g.
    # `make demo` run with --model.init_args.model_overrides ...); a from-scratch run gets the same architecture.
    hparams = load_checkpoint(pretrained)["hyper_parameters"]
    geometry = [
        "--model.init_args.preset", hparams["preset"],
        "--model.init_args.model_overrides", json.dumps(hparams.get("model_overrides") or {}),
    ]  # fmt: skip
    cli = _cli([
        "fit", "--config", str(CONFIGS / config),
        "--data.init_args.root", str(root or out / "shapesworld"),
        "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.logger.init_args.name", name,
        "--model.init_args.init_from", init_from or "null",
        *geometry,
        *extra_args,
    ])  # fmt: skip
    m = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    result: dict[str, object]
    if name.startswith("vqa"):
        result = {"accuracy": m["val/vqa_accuracy_overall"]}
        result.update({f"accuracy_{t}": m[f"val/vqa_accuracy_{t}"] for t in ("yes/no", "number", "other")})
        result["majority_baseline"] = vqa_majority_baseline(cli.datamodule)
    elif name == "nlvr2":
        result = {"accuracy": m["val/nlvr2_accuracy"], "consistency": m["val/nlvr2_consistency"], "chance": 0.5}
    else:
        result = {k.removeprefix("val/"): v for k, v in m.items() if "_r" in k}
        result["chance_r1"] = 1 / len(cli.datamodule.val_texts.text_to_image.unique())  # one image of N
    if any(origin == name for _, origin in FINETUNES.values()):  # a later stage starts from these weights
        stage_checkpoints[name] = str(out / f"{name}.ckpt")
        cli.trainer.save_checkpoint(stage_checkpoints[name], weights_only=True)
    result.update(
        init_from=started, train_steps=int(cli.trainer.global_step), seconds=round(time.perf_counter() - start, 1)
    )
    return result


def run(
    out: Path,
    extra_args: Sequence[str] = (),
    checkpoint: str | None = None,
    stages: Sequence[str] = STAGES,
    finetune_args: Sequence[str] = (),
    warmup_args: Sequence[str] | None = (),
    seed: int = 0,
) -> dict[str, object]:
    """Pre-train (or load `checkpoint`) and run the fine-tunings named in `stages`, every stage's training seeded
    by `seed` (flags given after it win)."""
    start = time.perf_counter()
    results: dict[str, object] = {"seed": seed}
    seeded = ["--seed_everything", str(seed), "--data.init_args.seed", str(seed)]
    finetune_args = [*seeded, *finetune_args]
    warmup_args = None if warmup_args is None else [*seeded, *warmup_args]
    pretrained, checkpoint = pretrain(out, [*seeded, *extra_args], checkpoint, warmup_args)
    results["grounding"] = pretrained.pop("grounding")
    results["pretrain"] = pretrained
    stage_checkpoints: dict[str, str] = {}  # only this run's, never a stale file from an earlier one
    for name in stages:
        if name != "pretrain":
            results[name] = finetune(name, out, checkpoint, finetune_args, stage_checkpoints=stage_checkpoints)
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    return results


def format_table(results: dict[str, object]) -> str:
    pre = results["pretrain"]
    assert isinstance(pre, dict)
    rows: list[tuple[str, float, float | None]] = [
        ("val ITM accuracy (negatives as in training)", pre["itm_accuracy"], pre["itm_chance"]),
        ("val ITM: true caption beats 1-word-swapped twin", pre["itm_hard_negative_accuracy"]["all"], 0.5),
        *(
            (f"  ... {kind} swapped", value, 0.5)
            for kind, value in pre["itm_hard_negative_accuracy"].items()
            if kind != "all"
        ),
        ("val MLM accuracy, colour + shape words", pre["mlm_attribute_accuracy"], pre["mlm_attribute_chance"]),
        ("  ... colour words", pre["mlm_colour_accuracy"], pre["mlm_colour_chance"]),
        ("  ... shape words", pre["mlm_shape_accuracy"], pre["mlm_shape_chance"]),
    ]
    lines = [f"{'metric':<52}{'value':>8}{'chance':>8}", "-" * 68]
    for name, value, chance in rows:
        lines.append(f"{name:<52}{value:>8.3f}{'' if chance is None else f'{chance:.3f}':>8}")
    if "grounding" in results:
        g = results["grounding"]
        assert isinstance(g, dict)
        name = "val pointing game: most attended cell on the shape"
        lines.append(f"{name:<52}{g['pointing_hit_rate']:>8.3f}{g['random_hit_rate']:>8.3f}")
        for label, rate in (("colour", g["colour_hit_rate"]), ("shape", g["shape_hit_rate"])):
            lines.append(f"{f'  ... {label} words':<52}{rate:>8.3f}{g[label + '_random_hit_rate']:>8.3f}")
        for layer, r in g["by_layer"].items():
            lines.append(f"{f'  ... layer {layer} only':<52}{r['pointing_hit_rate']:>8.3f}{r['random_hit_rate']:>8.3f}")
    warmup = f"{pre['warmup_steps']} warm-up steps on one-shape scenes, then " if pre.get("warmup_steps") else ""
    lines.append(f"pre-training: {warmup}{pre['train_steps']} steps in {pre['train_seconds']} s")
    downstream: list[tuple[str, float, float | None, str]] = []
    for name, label in (("vqa", "VQA (from pre-training)"), ("vqa_from_scratch", "VQA (from scratch)")):
        if name in results:
            r = results[name]
            assert isinstance(r, dict)
            downstream.append((f"val {label} accuracy", r["accuracy"], r["majority_baseline"], "majority"))
            for t in ("yes/no", "number", "other"):
                downstream.append((f"  ... {t}", r[f"accuracy_{t}"], None, ""))
    if "nlvr2" in results:
        r = results["nlvr2"]
        assert isinstance(r, dict)
        label = "from VQA fine-tuning" if r.get("init_from") == "vqa" else "from pre-training"
        downstream += [
            (f"dev NLVR2 ({label}) accuracy", r["accuracy"], 0.5, "chance"),
            ("dev NLVR2 consistency", r["consistency"], None, ""),
        ]
    if "retrieval" in results:
        r = results["retrieval"]
        assert isinstance(r, dict)
        for key in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"):
            downstream.append(
                (
                    f"val retrieval {key.replace('_r', ' R@')}",
                    r[key],
                    r["chance_r1"] if key.endswith("r1") else None,
                    "chance",
                )
            )
    if downstream:
        lines += ["", f"{'fine-tuned metric':<52}{'value':>8}{'baseline':>10}", "-" * 70]
        for name, value, base, kind in downstream:
            base_text = "" if base is None else f"{base:.3f} {kind}"
            lines.append(f"{name:<52}{value:>8.3f}  {base_text}")
    lines.append(f"seed {results.get('seed', 0)}, total {results['wall_seconds']} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("DEMO_OUT", "demo-output"))
    parser.add_argument("--checkpoint", help="score this PretrainTask checkpoint instead of pre-training")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {','.join(STAGES)}")
    parser.add_argument(
        "--finetune-arg", action="append", default=[], metavar="FLAG=VALUE",
        help="a CLI flag passed to every fine-tuning run (repeatable), e.g. --finetune-arg=--trainer.max_steps=50",
    )  # fmt: skip
    parser.add_argument(
        "--warmup-arg", action="append", default=[], metavar="FLAG=VALUE",
        help="a CLI flag passed to the one-shape warm-up run (repeatable); other flags go to the main pre-training",
    )  # fmt: skip
    parser.add_argument("--no-warmup", action="store_true", help="pre-train on the full corpus from random weights")
    parser.add_argument(
        "--seed", type=int, default=0,
        help="seeds every stage's training (the corpus and the evaluation stay the same)",
    )  # fmt: skip
    args, extra = parser.parse_known_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"--stages: unknown {sorted(unknown)}; expected among {','.join(STAGES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warmup = None if args.no_warmup else args.warmup_arg
    results = run(out, extra, args.checkpoint, stages, args.finetune_arg, warmup, args.seed)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    print(f"written: {out / 'results.json'}, {out / 'attention.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
