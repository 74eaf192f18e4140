"""DataModules on corpora in their published formats: the leak filter, equal batches on every rank (gloo)."""

import os
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pixelbert_pl.data import PretrainDataModule
from pixelbert_pl.harness.datamodules import ShapesWorldDataModule
from pixelbert_pl.models.visual import image_sizes_from_mask
from pixelbert_pl.processing.images import load_image


def _coco_vg(root, minilm_path: str, **kwargs) -> PretrainDataModule:
    coco, vg = root / "coco", root / "vg"
    return PretrainDataModule(
        tokenizer=minilm_path,
        karpathy_file=str(coco / "dataset_coco.json"),
        image_root=str(coco),
        vg_regions=str(vg / "region_descriptions.json"),
        vg_image_data=str(vg / "image_data.json"),
        vg_image_dirs=[str(vg / "VG_100K")],
        image_min_size=64,
        image_max_size=96,
        num_workers=0,
        **kwargs,
    )


def test_pretraining_never_sees_karpathy_val_or_test_images(coco_vg_root, minilm_path) -> None:
    dm = _coco_vg(coco_vg_root, minilm_path, batch_size=2)
    dm.setup("fit")
    train_ids = {r.image_id for r in dm.train_records}
    assert {"coco:1", "coco:2", "coco:3", "coco:4"} <= train_ids  # Karpathy train + restval
    assert not train_ids & {"coco:5", "coco:6", "coco:7", "coco:8"}  # Karpathy val + test
    assert "vg:3" not in train_ids and {"vg:1", "vg:2", "vg:4"} <= train_ids  # VG 3 is COCO 5 (val)
    assert {r.image_id for r in dm.val_records} == {"coco:5", "coco:6"}
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    assert batch.pixel_mask.shape[0] == 2 and batch.input_ids.shape[0] == 4
    # Each image's mask covers exactly the size the transform gave it, at the top left.
    for row, index in enumerate(batch.sample_ids.tolist()):
        record = dm.train_records[loader.dataset.pairs.locate(index)[0]]
        image = dm.transform(load_image(record.image_path))
        assert image_sizes_from_mask(batch.pixel_mask[row : row + 1]).tolist() == [list(image.shape[1:])]
        torch.testing.assert_close(batch.pixel_values[row, :, : image.shape[1], : image.shape[2]], image)


def test_flickr30k_evaluation_images_never_reach_pretraining_through_visual_genome(coco_vg_root, minilm_path) -> None:
    flickr = str(coco_vg_root / "flickr30k" / "dataset_flickr30k.json")
    guarded = _coco_vg(coco_vg_root, minilm_path, flickr30k_file=flickr)
    guarded.setup("fit")
    train_ids = {r.image_id for r in guarded.train_records}
    assert "vg:4" not in train_ids and "vg:5" in train_ids  # Flickr30K test photo dropped, train photo kept
    unguarded = _coco_vg(coco_vg_root, minilm_path)
    unguarded.setup("fit")
    assert "vg:4" in {r.image_id for r in unguarded.train_records}


def test_image_cache_keeps_decoded_images_within_its_budget(shapes_root) -> None:
    dm = ShapesWorldDataModule(root=str(shapes_root), batch_size=4, num_workers=0, image_cache_mb=1)
    dm.setup("fit")
    loader = dm.train_dataloader()
    dataset = loader.dataset
    assert dataset.image_cache_bytes == 2**20
    decoded = next(iter(loader))
    assert len(dataset._image_cache) == 4  # the batch's images, kept
    cached = next(iter(loader))  # the same epoch's first batch again, now read from the cache
    torch.testing.assert_close(cached.pixel_values, decoded.pixel_values)
    path = dm.train_records[0].image_path
    assert dataset.image(path) is dataset.image(path)  # served from the cache, not decoded again
    torch.testing.assert_close(dataset.image(path), dm.transform(load_image(path)))
    one = dataset.image(path)
    dataset._image_cache, dataset._image_cache_used = {}, 0
    dataset.image_cache_bytes = one.numel()  # room for one uint8 image: the second stays out
    dataset.image(path), dataset.image(dm.train_records[1].image_path)
    assert list(dataset._image_cache) == [path] and dataset._image_cache_used <= dataset.image_cache_bytes
    plain = ShapesWorldDataModule(root=str(shapes_root), batch_size=4, num_workers=0)
    plain.setup("fit")
    uncached = plain.train_dataloader().dataset
    uncached.image(path)
    assert uncached.image_cache_bytes == 0 and not uncached._image_cache


def _count_batches(rank: int, world: int, root: str, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    dm = ShapesWorldDataModule(root=root, batch_size=7, num_workers=0)
    dm.trainer = SimpleNamespace(world_size=world, global_rank=rank)  # what Lightning gives a DDP rank
    dm.setup("fit")
    loader = dm.train_dataloader()
    ids = [i for batch in loader for i in batch.sample_ids.tolist()]
    counts = [None] * world
    dist.all_gather_object(counts, (len(loader), sum(1 for _ in loader), ids))
    if rank == 0:
        torch.save(counts, out)
    dist.destroy_process_group()


def test_two_gloo_ranks_get_the_same_number_of_batches(shapes_root, tmp_path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    data = ShapesWorldDataModule(root=str(shapes_root))
    n_train = len(data.dataset(data.read_records(["train"], False)))  # items: every image-caption pair once
    assert n_train % 14, "the corpus must be uneven for this test to mean anything"
    out = tmp_path / "counts.pt"
    mp.spawn(_count_batches, args=(2, str(shapes_root), str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    (len0, iter0, ids0), (len1, iter1, ids1) = torch.load(out)
    assert len0 == len1 == iter0 == iter1 == n_train // 2 // 7
    assert not set(ids0) & set(ids1)  # the ranks read different samples


MIXED = dict(image_min_size=64, image_max_size=128, size_divisor=16, pad_long_sides=[96], text_pad_multiple=8)


def _mixed(root, **kwargs) -> PretrainDataModule:
    return PretrainDataModule(
        tokenizer=str(root / "vocab.txt"), karpathy_file=str(root / "karpathy.json"), image_root=str(root),
        train_splits=["train"], max_text_length=24, batch_size=4, num_workers=0, **{**MIXED, **kwargs},
    )  # fmt: skip


def test_bucketed_training_batches_take_one_padded_shape_each(mixed_shapes_root) -> None:
    from pixelbert_pl.processing import resize_shape
    from pixelbert_pl.processing.shapes import PadShapes

    dm = _mixed(mixed_shapes_root)
    dm.setup("fit")
    shapes = PadShapes.from_config(dm.processing)
    assert shapes is not None and dm.padding.shapes == shapes
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.train_dataloader()) == 30  # 24 images x 5 pairs / 4: none dropped here
    ids = [i for b in batches for i in b.sample_ids.tolist()]
    assert len(ids) == len(set(ids))
    pure = 0
    for batch in batches:
        shape = tuple(batch.pixel_values.shape[-2:])
        assert shape in shapes.shapes and batch.input_ids.shape[1] % 8 == 0
        buckets = {shapes.bucket(h, w) for h, w in batch.image_sizes}
        pure += buckets == {shapes.shapes.index(shape)}
        assert torch.equal(image_sizes_from_mask(batch.pixel_mask), torch.tensor(batch.image_sizes))
    assert pure >= len(batches) - 3  # the mixed ones are the buckets' leftovers
    # The buckets come from the files' headers, resized as the transform resizes them.
    record = dm.train_records[0]
    with load_image(record.image_path) as image:
        expected = resize_shape(image.height, image.width, 64, 128, 16)
    assert tuple(dm.transform(load_image(record.image_path)).shape[1:]) == expected


def test_validation_pads_to_the_fixed_shapes_in_order(mixed_shapes_root) -> None:
    from pixelbert_pl.processing.shapes import PadShapes

    dm = _mixed(mixed_shapes_root)
    dm.setup("fit")
    shapes = PadShapes.from_config(dm.processing)
    assert shapes is not None
    ids = []
    for batch in dm.val_dataloader():
        assert tuple(batch.pixel_values.shape[-2:]) in shapes.shapes
        ids += batch.sample_ids.tolist()
    assert ids == list(range(len(dm.val_records)))
