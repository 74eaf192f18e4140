"""`make demo`: generate ShapesWorld, pre-train the tiny Pixel-BERT on the CPU, and score what it learned.

    python -m pixelbert_pl.demo --out demo-output

Prints a table of metrics beside chance and writes it to `<out>/results.json`. The scores read the val split:
ITM with negatives drawn as in training (a caption of another image that is not one of this image's), ITM
against hard negatives that differ from a true caption in one colour, shape or relation word (no bar), and
MLM on colour and shape words masked one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from pixelbert_pl.data.captions import read_karpathy
from pixelbert_pl.data.datamodules import ShapesWorldDataModule
from pixelbert_pl.data.images import ImageTransform, load_image, pad_images
from pixelbert_pl.data.pretraining import CaptionPretrainDataset, pad_token_rows, sample_rng
from pixelbert_pl.data.shapes import COLOURS, SHAPES
from pixelbert_pl.models.pixel_bert import PixelBertOutput
from pixelbert_pl.tasks.pretrain import PretrainTask

CONFIG = Path(__file__).resolve().parents[2] / "lightning_configs" / "demo" / "pretrain_shapes.yaml"


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
        rows = self.tokenizer(list(captions), truncation=True, max_length=self.model.config.max_text_length)
        outs = self._forward(rows["input_ids"], list(image_index))
        return torch.cat([self.task.itm_head(o.cls_output).softmax(-1)[:, 1] for o in outs])

    def itm_accuracy(self, dataset: CaptionPretrainDataset) -> float:
        """Every caption of each image, plus as many negatives drawn exactly as the training data draws them."""
        captions, labels, index = [], [], []
        for i, record in enumerate(self.records):
            rng = sample_rng(dataset.seed, 0, i)
            own = set(record.captions)
            negatives = [dataset.negative_caption(i, own, rng) for _ in record.captions]
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
                ids = self.tokenizer(caption, truncation=True, max_length=self.model.config.max_text_length)
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
        for out in self._forward(rows, index):
            n = out.text_output.shape[0]
            pos = torch.tensor(positions[start : start + n])
            hidden = out.text_output[torch.arange(n), pos]
            predicted = self.task.mlm_head(hidden).argmax(-1)
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


def evaluate(task: PretrainTask, data: ShapesWorldDataModule) -> dict[str, object]:
    data.setup("validate")
    evaluator = ShapesEvaluator(task, data.root, data.transform, data.tokenizer, "val")
    mlm = evaluator.mlm_attribute_accuracy()
    return {
        "itm_accuracy": evaluator.itm_accuracy(data.dataset(data.val_records)),
        "itm_chance": 0.5,
        "itm_hard_negative_accuracy": evaluator.hard_negative_accuracy(),
        "itm_hard_negative_chance": 0.5,
        "mlm_attribute_accuracy": mlm["accuracy"],
        "mlm_colour_accuracy": mlm["colour_accuracy"],
        "mlm_shape_accuracy": mlm["shape_accuracy"],
        "mlm_attribute_chance": mlm["chance"],
        "mlm_colour_chance": 1 / len(COLOURS),
        "mlm_shape_chance": 1 / len(SHAPES),
    }


def run(out: Path, extra_args: Sequence[str] = (), checkpoint: str | None = None) -> dict[str, object]:
    """Pre-train with the demo config (or load `checkpoint`), then score on ShapesWorld val."""
    from pixelbert_pl.cli import main as cli_main

    start = time.perf_counter()
    sys.argv = sys.argv[:1]  # the demo's own flags are not LightningCLI's (it warns when it sees both)
    args = [
        "--config", str(CONFIG),
        "--data.init_args.root", str(out / "shapesworld"),
        "--trainer.logger.init_args.save_dir", str(out),
        *extra_args,
    ]  # fmt: skip
    if checkpoint is None:
        cli = cli_main(["fit", *args])
        task, steps = cli.model, int(cli.trainer.global_step)
    else:
        cli = cli_main(args, run=False)
        task = type(cli.model).load_from_checkpoint(checkpoint, map_location="cpu")
        steps = int(torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"])
    train_seconds = round(time.perf_counter() - start, 1) if checkpoint is None else None
    pretrain = evaluate(task, cli.datamodule)
    pretrain.update(train_steps=steps, train_seconds=train_seconds, checkpoint=checkpoint)
    return {"pretrain": pretrain, "wall_seconds": round(time.perf_counter() - start, 1)}


def format_table(results: dict[str, object]) -> str:
    pre = results["pretrain"]
    assert isinstance(pre, dict)
    rows = [
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
    lines.append(
        f"pre-training: {pre['train_steps']} steps in {pre['train_seconds']} s; total {results['wall_seconds']} s"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("DEMO_OUT", "demo-output"))
    parser.add_argument("--checkpoint", help="score this PretrainTask checkpoint instead of training")
    args, extra = parser.parse_known_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run(out, extra, args.checkpoint)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    print(f"written: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
