"""RetrievalTask: hard-negative loss, frozen CNN, rank head from ITM, exhaustive R@K equal on 1 and 2 processes."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from task_helpers import SMALL, all_parameters_have_gradients

from numerics import FLOAT16, FLOAT32, assert_close_scaled
from pixelbert_pl.harness.datamodules import ShapesWorldRetrievalDataModule
from pixelbert_pl.metrics import rerank_candidates, retrieval_recall
from pixelbert_pl.models.layouts import task_model_state
from pixelbert_pl.tasks import RetrievalTask


@pytest.fixture
def data(shapes_root) -> ShapesWorldRetrievalDataModule:
    return ShapesWorldRetrievalDataModule(root=str(shapes_root), num_negatives=6, **SMALL)


@pytest.fixture
def task(data) -> RetrievalTask:
    return RetrievalTask(preset="pixelbert_tiny", vocab_size=data.vocab_size, hard_negatives=2)


def test_the_cnn_is_frozen_and_everything_else_trained(task, data) -> None:
    assert not any(p.requires_grad for p in task.model.visual.trunk.parameters())
    task.train()
    assert not task.model.visual.trunk.training  # frozen batch-norm statistics too
    batch = next(iter(data.train_dataloader()))
    scores = task(batch)
    assert scores.shape == (batch.pixel_values.shape[0], 1 + 2)  # positive + the 2 hardest of 6 negatives
    task.compute_loss(scores, batch)["rank"].backward()
    assert all_parameters_have_gradients(task) == []


def test_loss_keeps_the_positive_and_the_highest_scoring_negatives(task, data) -> None:
    task.eval()
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad():
        pixels = task.model.encode_pixels(batch.pixel_values, batch.pixel_mask)
        every = task.net.score(pixels, batch.input_ids, batch.attention_mask, batch.image_index).view(
            -1, batch.group_size
        )
        kept = task(batch)
    assert_close_scaled(kept[:, 0], every[:, 0], FLOAT32)
    expected = every[:, 1:].topk(2, dim=1).values
    assert_close_scaled(kept[:, 1:].sort(dim=1, descending=True).values, expected, FLOAT32)


def test_rank_head_starts_from_the_itm_head(data, pretrain_checkpoint) -> None:
    task = RetrievalTask(preset="pixelbert_tiny", vocab_size=data.vocab_size, init_from=str(pretrain_checkpoint))
    itm = task_model_state(torch.load(pretrain_checkpoint, weights_only=False)["state_dict"])
    assert torch.allclose(task.net.rank_head.fc.weight[0], itm["itm_head.fc.weight"][1] - itm["itm_head.fc.weight"][0])
    assert task.net.rank_head.fc.bias.item() == pytest.approx(1.5)


def _evaluate(task: RetrievalTask, data: ShapesWorldRetrievalDataModule) -> dict[str, float]:
    task.eval()
    task.trainer = SimpleNamespace(datamodule=data, sanity_checking=False)  # what the evaluator reads
    task.on_validation_epoch_start()
    with torch.no_grad():
        for batch in data.val_dataloader():
            task.validation_step(batch, 0)
    return task.evaluator.compute("val")


def test_exhaustive_recall_equals_the_metric_on_the_full_matrix(task, data) -> None:
    data.setup("validate")
    result = _evaluate(task, data)
    texts, images = data.val_texts, data.records("val")
    loader = data.val_dataloader()
    with torch.no_grad():
        rows = []
        for batch in loader:
            pixels = task.model.encode_pixels(batch.pixel_values, batch.pixel_mask)
            for i in range(len(batch.image_positions)):
                n = texts.input_ids.shape[0]
                one = task.net.score(pixels, texts.input_ids, texts.attention_mask, torch.full((n,), i))
                rows.append(one.half().float())
    assert len(rows) == len(images)
    expected = retrieval_recall(torch.stack(rows), texts.text_to_image)
    assert result == {**expected, "rsum": sum(expected.values())}


def _rank(rank: int, world: int, init_file: str, state: dict, root: str, out: str, rerank: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    data = ShapesWorldRetrievalDataModule(root=root, **SMALL)
    data.trainer = SimpleNamespace(world_size=world, global_rank=rank)  # what the samplers shard by
    task = RetrievalTask(preset="pixelbert_tiny", vocab_size=data.vocab_size, **rerank)
    task.load_state_dict(state)
    result = _evaluate(task, data)
    if rank == 0:
        torch.save(result, out)
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("rerank", [{}, {"rerank_top_k": 2, "coarse_pool": 3}], ids=["exhaustive", "rerank"])
def test_two_process_evaluation_equals_one_process(task, data, shapes_root, tmp_path, rerank) -> None:
    task.evaluator.rerank_top_k, task.evaluator.coarse_pool = rerank.get("rerank_top_k"), rerank.get("coarse_pool", 2)
    single = _evaluate(task, data)
    out = tmp_path / "two.pt"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = (2, str(tmp_path / "init"), task.state_dict(), str(shapes_root), str(out), rerank)
    mp.spawn(_rank, args=args, nprocs=2, join=True)
    assert torch.load(out) == single


def test_score_matrix_scores_each_pair_as_alone_without_padding(task) -> None:
    """Mixed image sizes and caption lengths: every score is the pair's score computed alone (its image at its own
    size, its caption unpadded), and no forward pass carries a padded pixel token or a fully padded text column."""
    from pixelbert_pl.processing.batches import RetrievalTexts
    from pixelbert_pl.processing.padding import pad_images

    torch.manual_seed(0)
    task.eval()
    task.net.eval_chunk = 8
    sizes = [(64, 48), (48, 64), (64, 64), (64, 48), (32, 48)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in sizes]
    lengths = torch.tensor([5, 3, 9, 4, 7, 3, 12])
    ids = torch.randint(5, 50, (len(lengths), 14)) * (torch.arange(14) < lengths[:, None])
    texts = RetrievalTexts(ids, ids != 0, torch.zeros(len(lengths), dtype=torch.long))
    pixel_values, pixel_mask = pad_images(images)
    grids = [task.model.visual.token_grid(h, w) for h, w in sizes]

    seen: list[tuple[tuple[int, int], int, int]] = []  # (token grid, masked pixel tokens, text columns) of each pass
    score = task.net.score

    def recording(pixels, input_ids, mask, index):
        assert pixels.tokens.shape[1] == pixels.grid[0] * pixels.grid[1]
        seen.append((pixels.grid, int((~pixels.mask).sum()), input_ids.shape[1]))
        assert bool(mask[:, -1].any())  # the chunk is cut after its longest text
        return score(pixels, input_ids, mask, index)

    task.net.score = recording
    with torch.no_grad():
        pixels = task.model.encode_pixels(pixel_values, pixel_mask, sizes)
        matrix = task.net.score_matrix(pixels, texts, lengths, sizes)
        del task.net.score
        expected = torch.empty(matrix.shape)
        for i, image in enumerate(images):
            alone = task.model.encode_pixels(image[None])
            for j, n in enumerate(lengths.tolist()):
                row = torch.zeros(1, dtype=torch.long)
                expected[i, j] = task.net.score(alone, ids[j : j + 1, :n], texts.attention_mask[j : j + 1, :n], row)[0]
    assert_close_scaled(matrix.float(), expected.half().float(), FLOAT16)  # the fp16 matrix's own rounding
    assert matrix.shape == (5, 7) and matrix.dtype == torch.float16
    assert all(masked == 0 for _, masked, _ in seen)
    assert {grid for grid, _, _ in seen} == set(grids)
    # The two 64x48 images: 4 texts a pass, shortest first (lengths 3 3 4 5 | 7 9 12), not in the given order (9 | 12).
    assert [width for grid, _, width in seen if grid == grids[0]] == [5, 12]


def test_rerank_with_every_pair_a_candidate_is_exhaustive(task, data) -> None:
    data.setup("validate")
    exhaustive = _evaluate(task, data)
    matrix = task.evaluator.gather_scores()[1].float()
    task.evaluator.rerank_top_k, task.evaluator.coarse_pool = 10_000, 4  # a poor coarse stage, but every pair re-scored
    reranked = _evaluate(task, data)
    assert reranked == exhaustive
    coarse = task.evaluator.gather_scores()[1].float()
    assert (coarse - matrix).abs().max() > 1e-3  # the coarse stage did score pooled tokens


def test_rerank_rescores_each_images_and_each_texts_top_k_exactly(task, data) -> None:
    data.setup("validate")
    _evaluate(task, data)
    exhaustive = task.evaluator.gather_scores()[1].float()
    task.evaluator.rerank_top_k, task.evaluator.coarse_pool = 2, 3
    calls: list[int] = []
    rerank = task.evaluator.rerank

    def recording(coarse, positions, columns, stage):
        key = rerank(coarse, positions, columns, stage)
        calls.append(1)
        chosen = rerank_candidates(coarse, 2)
        offset = (key[chosen] - exhaustive[chosen]).mean()
        assert_close_scaled(key[chosen] - offset, exhaustive[chosen], FLOAT16)  # scaled by the scores, not the offset
        assert torch.equal(key[~chosen], coarse[~chosen])
        return key

    task.evaluator.rerank = recording
    result = _evaluate(task, data)
    assert calls == [1] and result.keys() == {f"{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} | {"rsum"}


def test_coarse_scores_read_pooled_tokens_of_each_image_alone(task) -> None:
    """The coarse stage's passes carry each image's own grid pooled (no padding of larger images in the batch),
    a score does not depend on the batch, and pool 1 is the exact score."""
    from pixelbert_pl.models.visual import pool_pixel_tokens
    from pixelbert_pl.processing.batches import RetrievalTexts
    from pixelbert_pl.processing.padding import pad_images

    torch.manual_seed(0)
    task.eval()
    sizes = [(64, 48), (48, 64), (40, 40)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in sizes]
    ids = torch.randint(5, 50, (4, 9))
    texts = RetrievalTexts(ids, torch.ones_like(ids, dtype=torch.bool), torch.zeros(4, dtype=torch.long))
    grids = [task.model.visual.token_grid(h, w) for h, w in sizes]
    seen: list[tuple[int, int]] = []
    score = task.net.score

    def recording(pixels, input_ids, mask, index):
        seen.append(pixels.grid)
        assert bool(pixels.mask.all())
        return score(pixels, input_ids, mask, index)

    task.net.score = recording
    with torch.no_grad():
        pixel_values, pixel_mask = pad_images(images)
        pixels = task.model.encode_pixels(pixel_values, pixel_mask, sizes)
        coarse = task.net.score_matrix(pixels, texts, None, sizes, pool=2)
        assert len(set(grids)) == 3 and sorted(seen) == sorted((-(-h // 2), -(-w // 2)) for h, w in grids)
        del task.net.score
        expected = torch.empty(coarse.shape)
        for i, image in enumerate(images):
            alone = pool_pixel_tokens(task.model.encode_pixels(image[None]), 2)
            expected[i] = task.net.score(alone, ids, texts.attention_mask, torch.zeros(4, dtype=torch.long))
        assert_close_scaled(coarse.float(), expected.half().float(), FLOAT16)
        exact = task.net.score_matrix(pixels, texts, None, sizes)
        torch.testing.assert_close(task.net.score_matrix(pixels, texts, None, sizes, pool=1), exact)
    assert (coarse.float() - exact.float()).abs().max() > 1e-3


def test_two_stage_evaluation_through_the_trainer(task, data) -> None:
    """The epoch-end exact stage runs where Lightning calls it, logs the task's own two-stage recall, frees the kept
    tokens, and runs under the precision plugin's autocast, as the steps do."""
    task.evaluator.rerank_top_k = 3
    expected = _evaluate(task, data)

    def validate(precision: str) -> dict[str, float]:
        trainer = pl.Trainer(
            accelerator="cpu", logger=False, enable_checkpointing=False, enable_model_summary=False,
            enable_progress_bar=False, precision=precision,
        )  # fmt: skip
        return trainer.validate(task, datamodule=data, verbose=False)[0]

    logged = validate("32-true")
    logged = {k.removeprefix("val/"): v for k, v in logged.items()}
    assert logged == {k: pytest.approx(v) for k, v in expected.items()}
    assert task.evaluator._pixels == [] and task.evaluator._scores == []
    autocast: list[bool] = []
    score_pairs = task.net.score_pairs

    def recording(*args, **kwargs):
        autocast.append(torch.is_autocast_enabled("cpu"))
        return score_pairs(*args, **kwargs)

    task.net.score_pairs = recording
    validate("bf16-mixed")
    assert autocast and all(autocast)  # coarse stage in the steps, exact stage at the epoch's end
    del task.net.score_pairs
    task.trainer = SimpleNamespace(datamodule=data, sanity_checking=True)  # Lightning's sanity check: no recall
    task.on_validation_epoch_start()
    task.validation_step(next(iter(data.val_dataloader())), 0)
    task.on_validation_epoch_end()
    assert task.evaluator._pixels == [] and task.evaluator._scores == []  # ... and nothing kept into the training epoch
