"""Every head: shapes, a gradient for every parameter of model and head, no NaN."""

import torch

import pixelbert_pl
from pixelbert_pl.models import ClassificationHead, ITMHead, MLMHead, NLVR2Head, RankHead


def test_every_parameter_gets_a_gradient_through_every_head() -> None:
    model = pixelbert_pl.create_model("pixelbert_tiny").train()
    cfg = model.config
    heads = torch.nn.ModuleDict(
        {
            "mlm": MLMHead(cfg, model.word_embeddings),
            "itm": ITMHead(cfg),
            "vqa": ClassificationHead(cfg, num_classes=11),
            "nlvr2": NLVR2Head(cfg),
            "rank": RankHead(cfg),
        }
    )
    ids = torch.randint(5, cfg.vocab_size, (4, 9))
    images = torch.randn(4, 3, 96, 96)
    mask = torch.ones(4, 96, 96, dtype=torch.bool)
    mask[3, 64:] = False
    out = model(ids, torch.ones(4, 9), images, mask, sample_pixels=True)
    mlm = heads["mlm"](out.text_output)
    assert mlm.shape == (4, 9, cfg.vocab_size)
    itm, vqa = heads["itm"](out.cls_output), heads["vqa"](out.cls_output)
    assert itm.shape == (4, 2) and vqa.shape == (4, 11)
    nlvr2 = heads["nlvr2"](out.cls_output[:2], out.cls_output[2:])
    rank = heads["rank"](out.cls_output)
    assert nlvr2.shape == (2, 2) and rank.shape == (4,)
    loss = mlm.mean() + itm.mean() + vqa.mean() + nlvr2.mean() + rank.mean() + out.pixel_output.mean()
    loss.backward()
    missing = [n for n, p in [*model.named_parameters(), *heads.named_parameters()] if p.grad is None]
    assert missing == []
    for name, p in [*model.named_parameters(), *heads.named_parameters()]:
        assert torch.isfinite(p.grad).all(), name
    assert torch.isfinite(loss)


def test_mlm_decoder_is_tied_to_the_word_embeddings() -> None:
    model = pixelbert_pl.create_model("pixelbert_tiny")
    head = MLMHead(model.config, model.word_embeddings)
    assert head.decoder.weight is model.word_embeddings.weight


def test_rank_head_from_itm_orders_pairs_like_itm() -> None:
    cfg = pixelbert_pl.get_config("pixelbert_tiny")
    itm, rank = ITMHead(cfg), RankHead(cfg)
    rank.init_from_itm(itm)
    cls = torch.randn(16, cfg.hidden_size)
    with torch.no_grad():
        p_match = itm(cls).softmax(-1)[:, 1]
        assert torch.equal(rank(cls).argsort(), p_match.argsort())
