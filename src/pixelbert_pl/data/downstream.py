"""Old module of the fine-tuning DataModules, kept for one release: name `pixelbert_pl.data.VQADataModule` (and
`NLVR2DataModule`, `RetrievalDataModule`, `SplitDataModule`)."""

from pixelbert_pl.data.aliases import moved_names

__getattr__ = moved_names(__name__, ("NLVR2DataModule", "RetrievalDataModule", "SplitDataModule", "VQADataModule"))
