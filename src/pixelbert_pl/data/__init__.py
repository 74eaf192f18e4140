"""Data: corpus readers in their published formats, samples, samplers and DataModules.

Recipes name the DataModules from here (`class_path: pixelbert_pl.data.VQADataModule`), whichever module holds them.
"""

from pixelbert_pl.data.classification import ImageTextClassificationDataModule
from pixelbert_pl.data.datamodules import PixelBertDataModule, PretrainDataModule
from pixelbert_pl.data.downstream import NLVR2DataModule, RetrievalDataModule, SplitDataModule, VQADataModule
from pixelbert_pl.data.streaming import StreamingPretrainDataModule

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
