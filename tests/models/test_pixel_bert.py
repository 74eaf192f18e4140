"""PixelBertModel: real BERT weights, batch-independent outputs, CNN reuse, attention maps, save/load."""

import pytest
import torch
from transformers import BertModel

import pixelbert_pl
from numerics import FLOAT32, FLOAT32_DEEP, assert_close_scaled, assert_grads_close
from pixelbert_pl.models.buckets import length_buckets
from pixelbert_pl.processing import load_tokenizer


def test_text_path_reproduces_bert_from_real_weights(minilm_path) -> None:
    model = pixelbert_pl.create_model("pixelbert_tiny", text_encoder=minilm_path).eval()
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.vocab_size) == (384, 6, 30522)
    assert model.visual.projection.out_channels == 384  # the visual projection follows the checkpoint
    reference = BertModel.from_pretrained(minilm_path).eval()
    tokenizer = load_tokenizer(minilm_path)
    batch = tokenizer(["a red circle left of a blue square.", "pixels"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(batch["input_ids"], batch["attention_mask"])
        expected = reference(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    assert_close_scaled(ours.sequence_output[real], expected[real], FLOAT32)  # HF's kernels, ours: other sum orders
    assert ours.pixel_output is None and ours.cls_output.shape == (2, 384)


def test_outputs_have_the_documented_shapes(tiny_model) -> None:
    ids = torch.randint(5, 100, (3, 7))
    out = tiny_model(ids, torch.ones(3, 7), torch.randn(3, 3, 96, 64), torch.ones(3, 96, 64, dtype=torch.bool))
    p = 6 * 4
    d = tiny_model.config.hidden_size
    assert out.sequence_output.shape == (3, 7 + p, d)
    assert out.text_output.shape == (3, 7, d)
    assert out.pixel_output.shape == (3, p, d)
    assert out.pixel_token_mask.shape == (3, p) and out.pixel_grid == (6, 4)
    assert out.cls_output.shape == (3, d)
    torch.testing.assert_close(out.cls_output, out.sequence_output[:, 0])


def test_cls_does_not_depend_on_the_rest_of_the_batch(tiny_model) -> None:
    ids = torch.randint(5, 100, (1, 6))
    image = torch.randn(3, 48, 80)
    values = torch.zeros(3, 3, 96, 96)
    mask = torch.zeros(3, 96, 96, dtype=torch.bool)
    values[0, :, :48, :80], mask[0, :48, :80] = image, True
    values[1], mask[1] = torch.randn(3, 96, 96), True
    values[2, :, :96, :32], mask[2, :96, :32] = torch.randn(3, 96, 32), True
    long_ids = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1).expand(3, -1)
    text_mask = torch.tensor([[1] * 6 + [0] * 3] * 3)
    with torch.no_grad():
        alone = tiny_model(ids, pixel_values=image[None]).cls_output[0]
        batched = tiny_model(long_ids, text_mask, values, mask).cls_output[0]
    assert_close_scaled(batched, alone, FLOAT32)


def test_cnn_runs_once_and_serves_several_captions(tiny_model) -> None:
    ids = torch.randint(5, 100, (4, 6))
    images = torch.randn(2, 3, 64, 64)
    image_index = torch.tensor([0, 0, 1, 0])
    calls = []
    hook = tiny_model.visual.trunk.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        shared = tiny_model(ids, pixel_values=images, image_index=image_index)
        repeated = tiny_model(ids, pixel_values=images[image_index])
    hook.remove()
    assert len(calls) == 2  # one trunk pass per forward, not per caption
    assert_close_scaled(shared.sequence_output, repeated.sequence_output, FLOAT32)  # the CNN batched 2 vs 4 images
    with pytest.raises(ValueError, match="image_index"):
        tiny_model(ids, pixel_values=images)


def test_attention_maps_on_request_match_the_sdpa_path(tiny_model) -> None:
    ids = torch.randint(5, 100, (2, 5))
    mask = torch.ones(2, 64, 64, dtype=torch.bool)
    mask[1, :, 32:] = False
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = tiny_model(ids, pixel_values=images, pixel_mask=mask)
        traced = tiny_model(ids, pixel_values=images, pixel_mask=mask, output_attentions=True)
    assert plain.attentions is None
    cfg = tiny_model.config
    length = plain.sequence_output.shape[1]
    assert len(traced.attentions) == cfg.num_hidden_layers
    assert traced.attentions[0].shape == (2, cfg.num_attention_heads, length, length)
    assert_close_scaled(traced.sequence_output, plain.sequence_output, FLOAT32)
    padded_keys = ~traced.attention_mask[1]
    assert float(traced.attentions[-1][1][..., padded_keys].abs().max()) == 0.0
    assert tiny_model.bert.config._attn_implementation == "sdpa"


def test_state_dict_round_trip_gives_identical_outputs(tiny_model) -> None:
    ids = torch.randint(5, 100, (2, 6))
    images = torch.randn(2, 3, 64, 64)
    clone = pixelbert_pl.create_model("pixelbert_tiny").eval()
    clone.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        assert torch.equal(
            tiny_model(ids, pixel_values=images).sequence_output, clone(ids, pixel_values=images).sequence_output
        )


@pytest.mark.parametrize("rows_sorted", [False, True])  # sorted: the buckets are consecutive rows (no gather)
def test_text_length_buckets_leave_real_positions_and_gradients_unchanged(rows_sorted: bool) -> None:
    torch.manual_seed(0)
    model = pixelbert_pl.create_model("pixelbert_tiny").train()  # dropout is 0 in the tiny preset
    lengths = [3, 3, 4, 6, 9, 12] if rows_sorted else [3, 9, 4, 12, 3, 6]
    ids = torch.randint(5, 100, (len(lengths), 12))
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    images = torch.randn(3, 3, 64, 64)
    image_index = torch.tensor([0, 1, 2, 0, 1, 2])
    probe = torch.randn(model.config.hidden_size)  # LayerNorm outputs' sum and sum of squares are constant: project

    def run(buckets):
        model.zero_grad()
        model.text_length_buckets = buckets
        out = model(ids, mask, pixel_values=images, image_index=image_index)
        real = torch.cat([mask.bool(), out.pixel_token_mask], dim=1)
        ((out.sequence_output[real] @ probe).pow(2).sum() + (out.cls_output @ probe).sum()).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        return out, real, grads

    plain, real, plain_grads = run(1)
    bucketed, real_b, bucketed_grads = run(3)
    torch.testing.assert_close(real_b, real)
    assert_close_scaled(bucketed.sequence_output[real], plain.sequence_output[real], FLOAT32)
    assert_close_scaled(bucketed.cls_output, plain.cls_output, FLOAT32)
    assert bucketed.sequence_output.shape == plain.sequence_output.shape
    p = bucketed.pixel_output.shape[1]
    for rows, width in length_buckets(lengths, 3, extra=p):  # text trimmed after a group's longest comes back as 0
        assert float(bucketed.text_output[rows, width:].abs().sum()) == 0.0
    assert_grads_close(bucketed_grads, plain_grads, FLOAT32_DEEP)


@pytest.mark.parametrize("buckets", [1, 3])
@pytest.mark.parametrize("outputs", ["cls", "text"])
def test_first_rows_outputs_match_the_full_pass_and_its_gradients(outputs: str, buckets: int) -> None:
    torch.manual_seed(0)
    model = pixelbert_pl.create_model("pixelbert_tiny", use_pooler=True).train()  # dropout is 0 in the tiny preset
    model.text_length_buckets = buckets
    lengths = [3, 9, 4, 12, 3, 6]
    ids = torch.randint(5, 100, (len(lengths), 12))
    mask = (torch.arange(12)[None] < torch.tensor(lengths)[:, None]).long()
    images, image_index = torch.randn(3, 3, 64, 48), torch.tensor([0, 1, 2, 0, 1, 2])
    probe = torch.randn(model.config.hidden_size)  # a LayerNorm output's sum of squares is constant: project it

    def loss(out) -> torch.Tensor:  # what the kept rows feed: [CLS] (ITM, VQA ...) and, for "text", the text (MLM)
        text = 0 if outputs == "cls" else ((out.text_output * mask[..., None]) @ probe).pow(2).sum()
        return out.cls_output.pow(2).sum() + text

    def run(rows: str):
        model.zero_grad()
        out = model(ids, mask, pixel_values=images, image_index=image_index, outputs=rows)
        loss(out).backward()
        return out, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    full, full_grads = run("all")
    short, short_grads = run(outputs)
    d = model.config.hidden_size
    assert short.pixel_output is None and full.pixel_output is not None
    if outputs == "cls":
        assert short.sequence_output.shape == (6, 1, d) and short.text_output is None
    else:
        assert short.sequence_output.shape == short.text_output.shape == (6, 12, d)
        real = mask.bool()
        assert_close_scaled(short.text_output[real], full.text_output[real], FLOAT32)
    assert_close_scaled(short.cls_output, full.cls_output, FLOAT32)
    # The kept rows' loss reaches every parameter that the full pass's reaches, with the same gradient.
    assert_grads_close(short_grads, full_grads, FLOAT32_DEEP)


def test_outputs_is_checked_and_attention_maps_need_every_row(tiny_model) -> None:
    ids, images = torch.randint(5, 100, (2, 5)), torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="output_attentions"):
        tiny_model(ids, pixel_values=images, output_attentions=True, outputs="cls")
    with pytest.raises(ValueError, match="'pixels'"):
        tiny_model(ids, pixel_values=images, outputs="pixels")


def test_compiled_transformer_gives_the_same_outputs_on_every_path() -> None:
    torch.manual_seed(0)
    model = pixelbert_pl.create_model("pixelbert_tiny").eval()
    ids, images = torch.randint(5, 100, (2, 6)), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(ids, pixel_values=images)
        model.compile_transformer()
        for outputs in ("all", "text", "cls"):
            got = model(ids, pixel_values=images, outputs=outputs)
            assert_close_scaled(got.cls_output, expected.cls_output, FLOAT32)
            if outputs != "cls":
                assert_close_scaled(got.text_output, expected.text_output, FLOAT32)
    assert hasattr(model._encode_first_rows, "_torchdynamo_orig_callable")  # the first-rows path was compiled too
