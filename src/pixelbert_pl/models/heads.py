"""Task heads, each its own module, built only by the tasks that use them (an unused head would leave DDP with
parameters that never get a gradient). Shapes: b rows, m masked positions, d hidden size."""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from pixelbert_pl.models.config import PixelBertConfig


def _mlp(d_in: int, d_hidden: int, d_out: int, eps: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, d_hidden), nn.LayerNorm(d_hidden, eps=eps), nn.GELU(), nn.Linear(d_hidden, d_out)
    )


class MLMHead(nn.Module):
    """BERT's LM head (dense -> act -> LayerNorm -> decoder) with the decoder tied to the word embeddings."""

    def __init__(self, config: PixelBertConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        d = config.hidden_size
        self.dense = nn.Linear(d, d)
        self.activation = ACT2FN[config.hidden_act]
        self.layer_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(d, word_embeddings.num_embeddings)
        self.decoder.weight = word_embeddings.weight
        nn.init.zeros_(self.decoder.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) hidden states of the masked positions -> (..., vocab) logits."""
        return self.decoder(self.layer_norm(self.activation(self.dense(hidden))))


class ITMHead(nn.Module):
    """Image-text matching: 2-way logits (index 1 = matched) from [CLS]."""

    def __init__(self, config: PixelBertConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.hidden_size, 2)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.fc(cls)


class ClassificationHead(nn.Module):
    """Classes from [CLS]: hidden -> 2 x hidden -> LayerNorm -> GELU -> classes (ViLT's VQA shape). The head of a
    new benchmark (visual entailment, ...) as much as VQA's; with `inputs` > 1 it reads that many [CLS] vectors side
    by side (a sample of two images)."""

    def __init__(self, config: PixelBertConfig, num_classes: int, inputs: int = 1) -> None:
        super().__init__()
        if num_classes < 1 or inputs < 1:
            raise ValueError(f"{type(self).__name__}: {num_classes} classes, {inputs} inputs; expected >= 1")
        d = inputs * config.hidden_size
        self.mlp = _mlp(d, 2 * config.hidden_size, num_classes, config.layer_norm_eps)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        """(b, inputs * d) [CLS] vectors -> (b, num_classes) logits."""
        return self.mlp(cls)


class NLVR2Head(nn.Module):
    """NLVR2 "pair" classifier over the concatenated [CLS] vectors of (left, text) and (right, text)."""

    def __init__(self, config: PixelBertConfig) -> None:
        super().__init__()
        d = 2 * config.hidden_size
        self.mlp = _mlp(d, d, 2, config.layer_norm_eps)

    def forward(self, cls_left: torch.Tensor, cls_right: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([cls_left, cls_right], dim=-1))


class RankHead(nn.Module):
    """One relevance score per image-text pair, for retrieval."""

    def __init__(self, config: PixelBertConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.hidden_size, 1)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.fc(cls).squeeze(-1)

    @torch.no_grad()
    def init_from_itm(self, itm: ITMHead) -> None:
        """Start from the ITM head's matched-vs-unmatched log-odds (ViLT starts from its matched row): a pre-trained
        model then ranks before any fine-tuning step."""
        self.fc.weight.copy_(itm.fc.weight[1:] - itm.fc.weight[:1])
        self.fc.bias.copy_(itm.fc.bias[1:] - itm.fc.bias[:1])
