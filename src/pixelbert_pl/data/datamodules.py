"""Old module of the pre-training DataModules, kept for one release: name `pixelbert_pl.data.PretrainDataModule`."""

from pixelbert_pl.data.aliases import moved_names

__getattr__ = moved_names(__name__, ("PixelBertDataModule", "PretrainDataModule"))
