"""Data: corpus readers, samples, samplers and DataModules, one module per role.

- `annotations.py`: format checks every reader shares; `captions.py`: COCO, Karpathy and Visual Genome captions.
- `records.py`: the dataset base (records by key, per-sample randomness, negative captions); `samplers.py`.
- `base.py`: the DataModule base (shared settings, processor, loaders).
- One module per task, each with its reader, dataset and DataModules: `pretraining.py`, `streaming.py` (with
  `shards.py`), `vqa.py`, `nlvr2.py`, `retrieval.py`, `classification.py`. Each task has a DataModule for its
  published files and one (`HF...`) for a user's own data through Hugging Face `datasets`: `sources.py` reads a
  source (a Hub id, a save_to_disk folder, Parquet / CSV / JSON lines), `hf.py` turns its rows into the records.
  Pre-training's (`hf_pretraining.py`) also streams a source (`streaming: true`), with what `streaming.py` gives.
- `quality.py` (unreadable samples), `workers.py` (loader worker set-up).

Recipes name the DataModules from here (`class_path: pixelbert_pl.data.VQADataModule`).
"""

from pixelbert_pl.data.base import PixelBertDataModule, SplitDataModule
from pixelbert_pl.data.classification import (
    ClassificationColumns,
    HFClassificationDataModule,
    ImageTextClassificationDataModule,
)
from pixelbert_pl.data.hf import CaptionColumns
from pixelbert_pl.data.hf_pretraining import HFPretrainDataModule
from pixelbert_pl.data.nlvr2 import HFNLVR2DataModule, NLVR2DataModule, PairColumns
from pixelbert_pl.data.pretraining import PretrainDataModule
from pixelbert_pl.data.retrieval import HFRetrievalDataModule, RetrievalDataModule
from pixelbert_pl.data.sources import DatasetSource
from pixelbert_pl.data.streaming import StreamingPretrainDataModule
from pixelbert_pl.data.vqa import HFVQADataModule, VQAColumns, VQADataModule

__all__ = [
    "CaptionColumns",
    "ClassificationColumns",
    "DatasetSource",
    "HFClassificationDataModule",
    "HFNLVR2DataModule",
    "HFPretrainDataModule",
    "HFRetrievalDataModule",
    "HFVQADataModule",
    "ImageTextClassificationDataModule",
    "NLVR2DataModule",
    "PairColumns",
    "PixelBertDataModule",
    "PretrainDataModule",
    "RetrievalDataModule",
    "SplitDataModule",
    "StreamingPretrainDataModule",
    "VQAColumns",
    "VQADataModule",
]
