"""Data: one image loader, corpus readers in their published formats, samples and DataModules."""

from pixelbert_pl.data.images import ImageTransform, UnreadableImageError, load_image, pad_images, resize_shape

__all__ = ["ImageTransform", "UnreadableImageError", "load_image", "pad_images", "resize_shape"]
