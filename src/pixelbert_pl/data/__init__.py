"""Data: one image loader, corpus readers in their published formats, samples and DataModules."""

from pixelbert_pl.data.images import UnreadableImageError, load_image, pad_images

__all__ = ["UnreadableImageError", "load_image", "pad_images"]
