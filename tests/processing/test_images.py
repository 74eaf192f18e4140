"""Tests for `pixelbert_pl.processing.images`; every image fixture is generated under tmp_path."""

from __future__ import annotations

import dataclasses
import pickle
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from pixelbert_pl.processing.images import UnreadableImageError, image_size, load_image
from pixelbert_pl.processing.padding import pad_images

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def noise_jpeg(path: Path, size: int = 256) -> Path:
    image = Image.frombytes("RGB", (size, size), random.Random(0).randbytes(size * size * 3))
    return save(image, path, format="JPEG", quality=95)


# --- load_image -------------------------------------------------------------------------------------------------


def test_rgb_jpeg_round_trip(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (40, 30), (200, 100, 50)), tmp_path / "a.jpg", quality=95)
    image = load_image(path)
    assert (image.mode, image.size) == ("RGB", (40, 30))
    assert close(image.getpixel((20, 15)), (200, 100, 50), tol=3)


@pytest.mark.parametrize(("orientation", "red_corner"), [(6, "top_right"), (8, "bottom_left")])
def test_exif_rotation_is_applied(tmp_path: Path, orientation: int, red_corner: str) -> None:
    # Stored landscape 64x32, red block in the stored top-left; tag 6 = rotate 90° clockwise to display, 8 = anti.
    stored = Image.new("RGB", (64, 32), BLUE)
    stored.paste(RED, (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = load_image(save(stored, tmp_path / "rot.jpg", exif=exif, quality=95))
    assert image.size == (32, 64)
    corners = {"top_left": (4, 4), "top_right": (27, 4), "bottom_left": (4, 59), "bottom_right": (27, 59)}
    for name, xy in corners.items():
        assert close(image.getpixel(xy), RED if name == red_corner else BLUE, tol=40), name


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    image = load_image(save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95))
    assert image.mode == "RGB"
    assert close(image.getpixel((8, 8)), RED)


def test_rgba_png_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (3, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 255))
    rgba.putpixel((2, 0), (255, 0, 0, 128))
    image = load_image(save(rgba, tmp_path / "rgba.png"))
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0)) for x in range(2)] == [WHITE, BLUE]
    assert close(image.getpixel((2, 0)), (255, 127, 127), tol=2)


def test_la_png_becomes_rgb(tmp_path: Path) -> None:
    image = load_image(save(Image.new("LA", (2, 2), (60, 255)), tmp_path / "la.png"))
    assert (image.mode, image.getpixel((0, 0))) == ("RGB", (60, 60, 60))


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([0, 0, 0, 0, 255, 0])
    palette.putpixel((1, 0), 1)
    image = load_image(save(palette, tmp_path / "p.png", transparency=0))
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0)) for x in range(2)] == [WHITE, (0, 255, 0)]


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    gray = Image.new("I;16", (3, 1))
    for x, value in enumerate((0, 128 * 257, 65535)):
        gray.putpixel((x, 0), value)
    image = load_image(save(gray, tmp_path / "g16.png"))
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), WHITE]


def test_jpeg_named_png_loads(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (8, 8), RED), tmp_path / "img0.png", format="JPEG")
    assert path.read_bytes()[:2] == b"\xff\xd8"
    assert close(load_image(path).getpixel((4, 4)), RED)


def broken_files(tmp_path: Path) -> dict[str, Path]:
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(noise_jpeg(tmp_path / "full.jpg").read_bytes()[:5000])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "page.jpg").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    return {
        "truncated": truncated,
        "empty": tmp_path / "empty.jpg",
        "html": tmp_path / "page.jpg",
        "missing": tmp_path / "missing.jpg",
    }


@pytest.mark.parametrize("kind", ["truncated", "empty", "html", "missing"])
def test_unreadable_files_raise_with_path(tmp_path: Path, kind: str) -> None:
    path = broken_files(tmp_path)[kind]
    with pytest.raises(UnreadableImageError) as info:
        load_image(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value) and info.value.path == str(path)


def test_pixel_cap_is_checked_from_the_header(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    assert load_image(path, max_pixels=10_000).size == (100, 100)
    with pytest.raises(UnreadableImageError, match="10000 pixels"):
        load_image(path, max_pixels=9_999)
    # A truncated file over the cap is refused for its size, i.e. before decoding is attempted.
    truncated = broken_files(tmp_path)["truncated"]
    with pytest.raises(UnreadableImageError, match="65536 pixels > 100"):
        load_image(truncated, max_pixels=100)


def test_pillow_decompression_bomb_is_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(Image.new("RGB", (100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(UnreadableImageError, match="bomb"):
        load_image(path)


def test_error_survives_pickling_and_one_argument_construction() -> None:
    err = pickle.loads(pickle.dumps(UnreadableImageError("/x/y.jpg", "truncated")))
    assert (err.path, err.reason, str(err)) == ("/x/y.jpg", "truncated", "cannot read image /x/y.jpg: truncated")
    assert str(UnreadableImageError("Caught UnreadableImageError in worker")) == "Caught UnreadableImageError in worker"


def test_batches_pin_their_tensors_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from pixelbert_pl.processing.batches import VQABatch

    # Pinning needs a CUDA driver; what is checked here is which fields get pinned and that nothing else changes.
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self + 0.5 if self.is_floating_point() else self + 1)
    batch = VQABatch(
        pixel_values=torch.zeros(1, 3, 4, 4), pixel_mask=torch.ones(1, 4, 4, dtype=torch.bool),
        input_ids=torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 3, dtype=torch.bool),
        image_index=torch.zeros(2, dtype=torch.long), targets=torch.zeros(2, 5), question_ids=torch.tensor([7, 8]),
        answers=[["a"], []], answer_types=["other", None], image_sizes=[(4, 4)],
    )  # fmt: skip
    pinned = batch.pin_memory()
    assert isinstance(pinned, VQABatch) and pinned is not batch
    assert torch.equal(pinned.question_ids, torch.tensor([8, 9])) and bool((pinned.targets == 0.5).all())
    assert pinned.answers == [["a"], []] and pinned.image_sizes == [(4, 4)] and pinned.answer_types == ["other", None]


def test_lightning_moves_a_batch_by_its_tensor_fields() -> None:
    from lightning_fabric.utilities.apply_func import _TransferableDataType, move_data_to_device

    from pixelbert_pl.processing.batches import PretrainBatch

    batch = PretrainBatch(
        pixel_values=torch.zeros(1, 3, 4, 4), pixel_mask=torch.ones(1, 4, 4, dtype=torch.bool),
        input_ids=torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 3, dtype=torch.bool),
        mlm_labels=torch.zeros(2, 3, dtype=torch.long), itm_labels=torch.tensor([1, 0]),
        image_index=torch.zeros(2, dtype=torch.long), pixel_sample_seeds=[3, 4], sample_ids=torch.tensor([5]),
        image_sizes=[(4, 4)], num_masked=2,
    )  # fmt: skip
    assert isinstance(batch, _TransferableDataType)  # moved by its own `to`, not walked field by field
    moved = move_data_to_device(batch, torch.device("meta"))
    assert isinstance(moved, PretrainBatch) and moved is not batch and batch.input_ids.device.type == "cpu"
    tensors = [f.name for f in dataclasses.fields(batch) if isinstance(getattr(batch, f.name), torch.Tensor)]
    assert len(tensors) == 8 and all(getattr(moved, name).is_meta for name in tensors)
    assert (moved.pixel_sample_seeds, moved.image_sizes, moved.num_masked) == ([3, 4], [(4, 4)], 2)


# --- pad_images -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size_divisor", "padded"), [(1, (8, 7)), (4, (8, 8)), (32, (32, 32))])
def test_pad_images(size_divisor: int, padded: tuple[int, int]) -> None:
    images = [torch.randn(3, 5, 7) + 10, torch.randn(3, 8, 4) + 10]
    pixel_values, pixel_mask = pad_images(images, size_divisor)
    assert pixel_values.shape == (2, 3, *padded)
    assert (pixel_mask.shape, pixel_mask.dtype) == ((2, *padded), torch.bool)
    for i, image in enumerate(images):
        h, w = image.shape[1:]
        assert pixel_mask[i].sum() == h * w and pixel_mask[i, :h, :w].all()
        assert torch.equal(pixel_values[i, :, :h, :w], image)
        assert (pixel_values[i][:, ~pixel_mask[i]] == 0).all()


def test_pad_images_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        pad_images([])
    with pytest.raises(ValueError):
        pad_images([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)])


# --- header sizes and fixed padded shapes ---------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_image_size_reads_the_header_and_exif_orientation_as_load_image_decodes(tmp_path, orientation: int) -> None:
    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.new("RGB", (64, 48), (10, 20, 30)).save(path, exif=exif)
    decoded = load_image(path)
    assert image_size(path) == (decoded.height, decoded.width) == ((48, 64) if orientation == 1 else (64, 48))
    assert image_size("bytes.jpg", data=path.read_bytes()) == image_size(path)
    with pytest.raises(UnreadableImageError, match=r"junk\.jpg"):
        image_size("junk.jpg", data=b"not an image")


def test_pad_images_to_a_given_shape_keeps_each_image_top_left() -> None:
    images = [torch.ones(3, 32, 64, dtype=torch.uint8), torch.full((3, 64, 32), 2, dtype=torch.uint8)]
    pixel_values, pixel_mask = pad_images(images, shape=(96, 96))
    assert pixel_values.shape == (2, 3, 96, 96) and pixel_mask.shape == (2, 96, 96)
    assert pixel_mask[0].sum() == 32 * 64 and pixel_mask[0, :32, :64].all()
    assert torch.equal(pixel_values[1, :, :64, :32], images[1]) and pixel_values[1, :, 64:].eq(0).all()
    with pytest.raises(ValueError, match="does not hold"):
        pad_images(images, shape=(64, 48))


def test_public_names_are_importable_from_the_processing_package(tmp_path) -> None:
    import pixelbert_pl.processing as processing

    with pytest.raises(processing.UnreadableImageError, match=r"nothing\.jpg"):
        processing.load_image(tmp_path / "nothing.jpg")
    assert issubclass(processing.UnreadableImageError, ValueError)
