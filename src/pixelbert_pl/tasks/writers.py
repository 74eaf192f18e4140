"""`ShardedResultWriter`: `pixelbert predict` records to one file, under DDP too. Each rank writes its share as JSON
beside the output, rank 0 merges the shares (each record once, sorted by its key) into the file's format
(`write_rows`) and removes them. `PredictionsWriter` (every task's default: JSON lines) and the VQA (EvalAI JSON) and
NLVR2 (test-P CSV) submission writers subclass it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import BasePredictionWriter


class ShardedResultWriter(BasePredictionWriter):
    key = "id"  # the field that names a record; a record predicted on two ranks is kept once

    def __init__(self, output_file: str) -> None:
        super().__init__(write_interval="epoch")
        self.output_file = Path(output_file)
        self.written = 0  # rows in the last file written

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must write its rows to self.output_file")

    def write_on_epoch_end(self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any) -> None:
        records = [r for batch in _flatten(predictions) for r in batch]
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        self._shard(trainer.global_rank).write_text(json.dumps(records))
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            merged: dict[Any, dict[str, Any]] = {}
            for rank in range(trainer.world_size):
                shard = self._shard(rank)
                merged.update((r[self.key], r) for r in json.loads(shard.read_text()))
                shard.unlink()
            self.write_rows([merged[k] for k in sorted(merged)])
            self.written = len(merged)
        trainer.strategy.barrier()

    def _shard(self, rank: int) -> Path:
        return self.output_file.with_name(f"{self.output_file.name}.rank{rank}.json")


def _flatten(predictions: Any) -> list[Any]:
    # Lightning nests predictions per dataloader when there are several.
    if predictions and isinstance(predictions[0], list) and predictions[0] and isinstance(predictions[0][0], list):
        return [batch for loader in predictions for batch in loader]
    return list(predictions)


class PredictionsWriter(ShardedResultWriter):
    """Every task's `pixelbert predict` output: one JSON object a line per sample, {"id": the sample's identifier,
    then what the task model's `postprocess` gives} (VQA: answer, score; NLVR2: prediction, score; classification:
    label, score, scores; retrieval: an image's best texts; pre-training: the ITM match), sorted by id, each once
    under DDP. `output_file` defaults to predictions.jsonl in the run's log folder; the path is printed."""

    def __init__(self, output_file: str | None = None) -> None:
        super().__init__(output_file or "predictions.jsonl")
        self._default = output_file is None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "predict" and self._default:
            self.output_file = Path(trainer.log_dir or trainer.default_root_dir) / "predictions.jsonl"

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        self.output_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"predictions: {self.output_file.absolute()} ({len(rows)} rows)", flush=True)
