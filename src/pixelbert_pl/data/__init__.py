"""Data: corpus readers in their published formats, samples, samplers and DataModules, one module per role.

- `annotations.py`: format checks every reader shares; `captions.py`: COCO, Karpathy and Visual Genome captions.
- `records.py`: the dataset base (records by key, per-sample randomness, negative captions); `samplers.py`.
- `base.py`: the DataModule base (shared settings, processor, loaders).
- One module per task, each with its reader, dataset and DataModule: `pretraining.py`, `streaming.py` (with
  `shards.py`), `vqa.py`, `nlvr2.py`, `retrieval.py`, `classification.py`.
- `quality.py` (unreadable samples), `workers.py` (loader worker set-up).

Recipes name the DataModules from here (`class_path: pixelbert_pl.data.VQADataModule`).
"""

from pixelbert_pl.data.base import PixelBertDataModule, SplitDataModule
from pixelbert_pl.data.classification import ImageTextClassificationDataModule
from pixelbert_pl.data.nlvr2 import NLVR2DataModule
from pixelbert_pl.data.pretraining import PretrainDataModule
from pixelbert_pl.data.retrieval import RetrievalDataModule
from pixelbert_pl.data.streaming import StreamingPretrainDataModule
from pixelbert_pl.data.vqa import VQADataModule

__all__ = [
    "ImageTextClassificationDataModule",
    "NLVR2DataModule",
    "PixelBertDataModule",
    "PretrainDataModule",
    "RetrievalDataModule",
    "SplitDataModule",
    "StreamingPretrainDataModule",
    "VQADataModule",
]
