"""Training throughput through the Lightning task, the path `pixelbert fit` runs: `Trainer.fit` on a
`PretrainTask` or `VQATask`, with the shipped configs' precision, clipping and optimiser, on synthetic batches
that already sit on the device (as the yardstick's do), so the figure is the training step's and not the
loader's (see `loader.py` for that).

    python -m benchmarks.train_throughput --mode pretrain --size 800 1344 --batch 16 --compile   # on a GPU
    python -m benchmarks.train_throughput --device cpu --preset pixelbert_tiny --size 96 96 --batch 4

`--batch` counts image-text rows (the yardstick's samples); with `--captions-per-image c` the CNN sees
batch / c images: the CNN runs once per image for all its captions (pre-training) or questions (VQA: the batches
`VQADataModule(questions_per_image=c)` makes).
`--sync-debug` counts the host-device syncs of the timed steps (torch.cuda's sync debug mode), with where they are.

`--coco-like` trains on `--mix-batches` distinct batches, cycled over the steps, instead of one: COCO-like images
(`benchmarks.common.COCO_LIKE_SIZES`) resized by `--resize MIN MAX`, in `BucketedEpochKeyedSampler`'s order, each
batch padded to its `PadShapes` shape (`--pad-long-sides`), texts of COCO-like lengths padded to a multiple of
`--text-pad-multiple` (8, the recipes');
the task is built with that `ProcessingConfig`, so the model runs its padded-trunk path (one static graph per
shape when compiled). `--size` and `--text-len` are unused there; `--steps` must be a multiple of `--mix-batches`,
so every batch weighs the same.

    python -m benchmarks.train_throughput --coco-like --mode pretrain --batch 64 --captions-per-image 2 \
        --frozen-stages 1 --compile --compile-mode reduce-overhead --warmup 16 --steps 16   # on a GPU
"""

from __future__ import annotations

import argparse
import collections
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import (
    bucketed_batches,
    coco_like_sizes,
    coco_like_text_lengths,
    count_flops,
    emit,
    environment,
    peak_gib,
    reset_peak,
    resized_sizes,
    synchronize,
)
from pixelbert_pl.models import preset_processing
from pixelbert_pl.processing import ProcessingConfig
from pixelbert_pl.processing.batches import IGNORE_INDEX, PretrainBatch, VQABatch
from pixelbert_pl.processing.padding import pad_images
from pixelbert_pl.processing.shapes import PadShapes
from pixelbert_pl.tasks import OptimizerConfig, PixelBertTask, PretrainTask, VQATask

NUM_ANSWERS = 3129  # VQA v2's usual answer vocabulary, as in the yardstick
SIZE_MIXES = ("coco_like",)
POOL_IMAGES = 20_000  # the epoch the mixed batches are drawn from: mixed-bucket batches as rare as in a real one


@dataclass
class TrainShape:
    mode: str = "pretrain"  # "pretrain" (MLM + ITM, sampled pixels) or "finetune" (VQA, every pixel)
    preset: str = "pixelbert_r50"
    size: tuple[int, int] = (800, 1344)
    batch: int = 16  # image-text rows per step
    text_len: int = 32
    captions_per_image: int = 1
    frozen_stages: int = 0
    channels_last: bool = True
    compile: bool = False
    compile_mode: str | None = None
    precision: str = "bf16-mixed"
    cudnn_benchmark: bool = True
    # "coco_like": `mix_batches` distinct batches of COCO-like images (`mixed_batches`) instead of one at `size`.
    size_mix: str | None = None
    resize: tuple[int, int] = (800, 1333)  # size_mix: the resize's short side and long-side cap
    pad_long_sides: tuple[int, ...] = (1056, 1184)  # size_mix: the `PadShapes` long sides (the recipes')
    text_pad_multiple: int = 8  # size_mix: texts padded to a multiple of this (the recipes')
    mix_batches: int = 8

    def __post_init__(self) -> None:
        if self.size_mix is not None and self.size_mix not in SIZE_MIXES:
            raise ValueError(f"TrainShape.size_mix={self.size_mix!r}: expected None or one of {list(SIZE_MIXES)}")
        if self.batch % self.captions_per_image:
            raise ValueError(
                f"TrainShape: batch={self.batch} rows is not a multiple of captions_per_image={self.captions_per_image}"
            )
        if self.mix_batches < 1 or self.text_pad_multiple < 1:
            raise ValueError(
                f"TrainShape: mix_batches={self.mix_batches}, text_pad_multiple={self.text_pad_multiple}: expected >= 1"
            )

    def processing(self) -> ProcessingConfig | None:
        """The task's `ProcessingConfig` for a size mix (the preset's text settings, this resize and these padded
        shapes), None otherwise (the preset's)."""
        if self.size_mix is None:
            return None
        return preset_processing(self.preset).replace(
            image_min_size=self.resize[0], image_max_size=self.resize[1], pad_long_sides=tuple(self.pad_long_sides)
        )


def synthetic_batch(shape: TrainShape, vocab: int, device: str) -> PretrainBatch | VQABatch:
    """One batch of random images and token ids at the given shape, on `device` (yardstick's text recipe:
    ids in [1000, 30000), every 7th position from the 2nd an MLM target)."""
    g = torch.Generator().manual_seed(0)
    rows = shape.batch
    images = rows // shape.captions_per_image
    h, w = shape.size
    ids = torch.randint(min(1000, vocab // 2), min(30000, vocab), (rows, shape.text_len), generator=g)
    common: dict[str, Any] = {
        "pixel_values": torch.randn(images, 3, h, w, generator=g),
        "pixel_mask": torch.ones(images, h, w, dtype=torch.bool),
        "input_ids": ids,
        "attention_mask": torch.ones(rows, shape.text_len, dtype=torch.bool),
        "image_index": torch.arange(images).repeat_interleave(rows // images),
        "image_sizes": [(h, w)] * images,
    }
    batch = _task_batch(shape.mode, common, list(range(rows)), torch.arange(images))
    return apply_to_collection(batch, torch.Tensor, lambda t: t.to(device))


def _task_batch(mode: str, common: dict[str, Any], seeds: list[int], sample_ids: torch.Tensor) -> Any:
    """A `PretrainBatch` (every 7th real text position from the 2nd an MLM target) or a `VQABatch` of `common`."""
    ids, rows = common["input_ids"], common["input_ids"].shape[0]
    if mode == "pretrain":
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[:, 1::7] = ids[:, 1::7]
        labels[~common["attention_mask"]] = IGNORE_INDEX
        return PretrainBatch(
            **common, mlm_labels=labels, itm_labels=torch.arange(rows) % 2, pixel_sample_seeds=seeds,
            sample_ids=sample_ids, num_masked=int((labels != IGNORE_INDEX).sum()),
        )  # fmt: skip
    return VQABatch(
        **common, targets=torch.zeros(rows, NUM_ANSWERS), question_ids=torch.arange(rows),
        answers=[[] for _ in range(rows)], answer_types=[None] * rows,
    )  # fmt: skip


def mixed_batches(shape: TrainShape, vocab: int, device: str) -> list[PretrainBatch | VQABatch]:
    """`shape.mix_batches` batches as the recipes' loaders give them on COCO-like data, on `device`: the first
    batches of `BucketedEpochKeyedSampler`'s epoch over `POOL_IMAGES` COCO-like sizes, resized by `shape.resize`,
    each of `shape.batch // shape.captions_per_image` random uint8 images (what the DataModules send) padded to its
    `PadShapes` shape, `pixel_mask` and `image_sizes` giving each image's real size; each row a COCO-like caption
    (pre-training) or question (VQA) length, padded to a multiple of `shape.text_pad_multiple`. Text recipe and
    other fields as `synthetic_batch`'s."""
    processing = shape.processing()
    assert processing is not None  # a size mix names its resize and shapes
    shapes = PadShapes.from_config(processing)
    if shapes is None:
        raise ValueError(f"TrainShape.pad_long_sides={list(shape.pad_long_sides)}: expected some long sides")
    images = shape.batch // shape.captions_per_image
    sizes = resized_sizes(coco_like_sizes(max(POOL_IMAGES, images * shape.mix_batches)), processing)
    chosen = bucketed_batches(sizes, shapes, images)[: shape.mix_batches]
    if len(chosen) < shape.mix_batches:
        raise ValueError(f"mix_batches={shape.mix_batches}: the pool makes only {len(chosen)} batches of {images}")
    kind = "caption" if shape.mode == "pretrain" else "question"
    lengths = coco_like_text_lengths(shape.batch * shape.mix_batches, kind, cap=processing.max_text_length)
    g = torch.Generator().manual_seed(0)
    rows, k = shape.batch, shape.text_pad_multiple
    out: list[PretrainBatch | VQABatch] = []
    for b, members in enumerate(chosen):
        real = [sizes[i] for i in members]
        pixels = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in real]
        pixel_values, pixel_mask = pad_images(pixels, shape=shapes.covering(real))
        length = torch.tensor(lengths[b * rows : (b + 1) * rows])
        width = -(-int(length.max()) // k) * k
        attention = torch.arange(width)[None, :] < length[:, None]
        ids = torch.randint(min(1000, vocab // 2), min(30000, vocab), (rows, width), generator=g) * attention
        common: dict[str, Any] = {
            "pixel_values": pixel_values, "pixel_mask": pixel_mask, "input_ids": ids, "attention_mask": attention,
            "image_index": torch.arange(images).repeat_interleave(rows // images), "image_sizes": real,
        }  # fmt: skip
        batch = _task_batch(shape.mode, common, list(range(b * rows, (b + 1) * rows)), torch.tensor(members))
        out.append(apply_to_collection(batch, torch.Tensor, lambda t: t.to(device)))
    return out


def mix_report(batches: list[Any], shape: TrainShape) -> dict[str, Any]:
    """What the mixed batches hold: their distinct image shapes and text widths, padded pixels per real pixel, how
    many hold images of more than one bucket, and how many padded shapes there are."""
    processing = shape.processing()
    assert processing is not None
    shapes = PadShapes.from_config(processing)
    assert shapes is not None
    padded = sum(b.pixel_values.shape[0] * b.pixel_values.shape[2] * b.pixel_values.shape[3] for b in batches)
    real = sum(h * w for b in batches for h, w in b.image_sizes)
    return {
        "image_shapes": sorted({tuple(b.pixel_values.shape[-2:]) for b in batches}),
        "distinct_image_shapes": len({tuple(b.pixel_values.shape[-2:]) for b in batches}),
        "distinct_text_widths": len({b.input_ids.shape[1] for b in batches}), "pad_shapes": len(shapes),
        "mixed_batches": sum(len({shapes.bucket(h, w) for h, w in b.image_sizes}) > 1 for b in batches),
        "padded_to_real": round(padded / real, 4),
    }  # fmt: skip


def make_task(shape: TrainShape) -> PixelBertTask:
    optimizer = OptimizerConfig(cnn_frozen_stages=shape.frozen_stages, warmup_steps=10)
    common: dict[str, Any] = {
        "preset": shape.preset, "optimizer": optimizer, "channels_last": shape.channels_last, "compile": False,
        "processing": shape.processing(),
    }  # fmt: skip
    if shape.mode == "pretrain":
        return PretrainTask(**common)
    return VQATask(answer_vocab=[f"answer{i}" for i in range(NUM_ANSWERS)], **common)


class _Cycle(Dataset):
    """`length` steps over `batches` in turn (already on the device)."""

    def __init__(self, batches: list[Any], length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.batches[index % len(self.batches)]


def _identity(batch: Any) -> Any:
    return batch


class StepProfiler(pl.Callback):
    """torch.profiler over `steps` steps after warm-up; prints where host and device time go."""

    def __init__(self, warmup: int, steps: int = 2) -> None:
        self.warmup, self.steps = warmup, steps
        self.profiler: torch.profiler.profile | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup and self.profiler is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.profiler is not None and trainer.global_step == self.warmup + self.steps:
            synchronize("cuda" if torch.cuda.is_available() else "cpu")
            self.profiler.__exit__(None, None, None)
            averages = self.profiler.key_averages()
            print(averages.table(sort_by="self_cpu_time_total", row_limit=25), flush=True)
            if torch.cuda.is_available():
                print(averages.table(sort_by="self_device_time_total", row_limit=25), flush=True)
            self.profiler = None


class SyncCounter(pl.Callback):
    """Counts host-device syncs from step `warmup` on (torch.cuda's sync debug mode warns at each) and keeps where
    the first few came from; the whole loop iteration is watched, Lightning's batch-end bookkeeping included."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.count, self.where = warmup, 0, collections.Counter()
        self._previous = warnings.showwarning

    def _record(self, message: Any, *args: Any, **kwargs: Any) -> None:
        if "synchroniz" not in str(message):
            return self._previous(message, *args, **kwargs)
        self.count += 1
        stack = traceback.extract_stack()[:-1]
        frames = [f for f in stack if "/torch/" not in f.filename and "warnings" not in f.filename]
        self.where[" <- ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in frames[-4:][::-1])] += 1

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup and torch.cuda.is_available():
            warnings.simplefilter("always")
            warnings.showwarning = self._record  # type: ignore[assignment]
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_end(self, *args: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = self._previous


class StepTimer(pl.Callback):
    """Wall time from the start of step `warmup` to the end of training, the device synchronised at both ends."""

    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.device = warmup, device
        self.start: float | None = None
        self.stop: float | None = None
        self.first_step_start: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == 0 and self.first_step_start is None:
            self.first_step_start = time.perf_counter()
        if trainer.global_step == self.warmup and self.start is None:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, *args: Any) -> None:
        synchronize(self.device)
        self.stop = time.perf_counter()


def measure_training(
    shape: TrainShape, device: str, warmup: int = 3, steps: int = 10, profile: bool = False, sync_debug: bool = False
) -> dict[str, Any]:
    if shape.size_mix is not None and steps % shape.mix_batches:
        raise ValueError(f"steps={steps}: expected a multiple of mix_batches={shape.mix_batches} (equal weights)")
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = shape.cudnn_benchmark
    task = make_task(shape)
    vocab = task.model.config.vocab_size
    batches = mixed_batches(shape, vocab, device) if shape.size_mix else [synthetic_batch(shape, vocab, device)]
    task.to(device)
    amp = shape.precision.startswith("bf16")
    task.train()
    # FLOPs of a step (forward and backward), counted eagerly before anything is compiled, once per batch shape.
    by_shape: dict[tuple[Any, ...], int] = {}
    for batch in batches:
        key = (tuple(batch.pixel_values.shape), tuple(batch.input_ids.shape))
        if key not in by_shape:
            by_shape[key] = count_flops(lambda b=batch: _loss(task, b, amp, device).backward())
            task.zero_grad(set_to_none=True)
    flops = sum(by_shape[(tuple(b.pixel_values.shape), tuple(b.input_ids.shape))] for b in batches) / len(batches)
    if shape.compile:
        task.compile_model(shape.compile_mode)
    profiled = 2 if profile else 0  # profiled steps run before the timed ones: the profiler slows them down
    timer = StepTimer(warmup + profiled, device)
    callbacks: list[pl.Callback] = [timer]
    if profile:
        callbacks.append(StepProfiler(warmup, profiled))
    syncs = SyncCounter(warmup + profiled) if sync_debug else None
    if syncs is not None:
        callbacks.append(syncs)
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=shape.precision,
        max_steps=warmup + profiled + steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, benchmark=shape.cudnn_benchmark, gradient_clip_val=10.0,
        num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=50,
        callbacks=callbacks,
    )  # fmt: skip
    reset_peak(device)
    loader = DataLoader(_Cycle(batches, warmup + profiled + steps), batch_size=None, collate_fn=_identity)
    torch._dynamo.utils.counters.clear()
    trainer.fit(task, train_dataloaders=loader)
    dynamo = torch._dynamo.utils.counters  # one graph each for the trunk and the encoder, when nothing breaks
    breaks = sorted(dynamo["graph_break"].items(), key=lambda kv: -kv[1])[:3]
    assert timer.start is not None and timer.stop is not None and timer.first_step_start is not None
    step_s = (timer.stop - timer.start) / steps
    images = shape.batch // shape.captions_per_image
    sync_report = {}
    if syncs is not None:
        sync_report = {"syncs_in_timed_steps": syncs.count, "sync_sites": dict(syncs.where.most_common(5))}
    return {
        "kind": "train_throughput", "path": "lightning", **{k: v for k, v in vars(shape).items()},
        "images_per_step": images, "step_s": round(step_s, 4), "samples_per_s": round(shape.batch / step_s, 2),
        "tflops_per_step": round(flops / 1e12, 3), "achieved_tflop_s": round(flops / step_s / 1e12, 1),
        "peak_gib": peak_gib(device), "warmup_incl_compile_s": round(timer.start - timer.first_step_start, 1),
        "compiled_graphs": dynamo["stats"]["unique_graphs"], "graph_breaks": [f"{n}x {why[:200]}" for why, n in breaks],
        **sync_report, **(mix_report(batches, shape) if shape.size_mix else {}),
    }  # fmt: skip


def _loss(task: PixelBertTask, batch: Any, amp: bool, device: str) -> torch.Tensor:
    with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
        kwargs = {"sample": True} if isinstance(task, PretrainTask) else {}
        return task.losses(batch, **kwargs)["loss"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["pretrain", "finetune"], default="pretrain")
    p.add_argument("--preset", default="pixelbert_r50")
    p.add_argument("--size", type=int, nargs=2, default=[800, 1344])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--text-len", type=int, default=32)
    p.add_argument("--captions-per-image", type=int, default=1)
    p.add_argument("--frozen-stages", type=int, default=0)
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-mode", default=None, help='e.g. "reduce-overhead" (CUDA graphs)')
    p.add_argument("--precision", default=None, help="default bf16-mixed on a GPU, 32-true on the CPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--warmup", type=int, default=None, help="default 3; with --coco-like 2 x --mix-batches")
    p.add_argument("--steps", type=int, default=None, help="default 10; with --coco-like 2 x --mix-batches")
    p.add_argument("--coco-like", action="store_true", help="distinct batches of COCO-like images, padded shapes")
    p.add_argument("--resize", type=int, nargs=2, default=[800, 1333], metavar=("MIN", "MAX"), help="--coco-like")
    p.add_argument("--pad-long-sides", type=int, nargs="+", default=[1056, 1184], help="--coco-like")
    p.add_argument("--text-pad-multiple", type=int, default=8, help="--coco-like")
    p.add_argument("--mix-batches", type=int, default=8, help="--coco-like: distinct batches, cycled over the steps")
    p.add_argument("--profile", action="store_true", help="print torch.profiler tables of two steps after warm-up")
    p.add_argument("--sync-debug", action="store_true", help="count host-device syncs in the timed steps (GPU)")
    p.add_argument("--name", default=None, help="a name for the JSON line (the suite's)")
    args = p.parse_args()
    shape = TrainShape(
        mode=args.mode, preset=args.preset, size=tuple(args.size), batch=args.batch, text_len=args.text_len,
        captions_per_image=args.captions_per_image, frozen_stages=args.frozen_stages,
        channels_last=not args.no_channels_last, compile=args.compile, compile_mode=args.compile_mode,
        precision=args.precision or ("bf16-mixed" if args.device == "cuda" else "32-true"),
        size_mix="coco_like" if args.coco_like else None, resize=tuple(args.resize),
        pad_long_sides=tuple(args.pad_long_sides), text_pad_multiple=args.text_pad_multiple,
        mix_batches=args.mix_batches,
    )  # fmt: skip
    # Two cycles of warm-up: every batch shape compiled, then its CUDA graph recorded (reduce-overhead).
    cycle = 2 * args.mix_batches if args.coco_like else None
    warmup = args.warmup if args.warmup is not None else cycle or 3
    steps = args.steps if args.steps is not None else cycle or 10
    emit(environment(args.device))
    result = measure_training(shape, args.device, warmup, steps, args.profile, args.sync_debug)
    emit({"name": args.name, **result} if args.name else result)


if __name__ == "__main__":
    main()
