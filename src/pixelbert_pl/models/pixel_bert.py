"""`PixelBertModel`: BERT text embeddings and CNN pixel tokens in one BERT transformer.

Shapes: b rows (image-text pairs), t text tokens, p pixel tokens, L = t + p, d hidden size.

The sequence is `[CLS] w_1 .. w_n [SEP] v_1 .. v_k` with no trailing [SEP] (paper Sec. 3). Text goes through
BERT's own embedding layer (word + position + token type 0, LayerNorm); pixel tokens get no position embedding,
only the shared s_v. The encoder is `transformers`' BERT encoder, called directly on the joint sequence with a
joint key mask, attending through PyTorch SDPA (eager only when attention maps are asked for).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, PreTrainedTokenizerBase
from transformers.models.bert.modeling_bert import BertLayer

from pixelbert_pl.models import pretrained
from pixelbert_pl.models.buckets import length_buckets, run_grouped
from pixelbert_pl.models.config import PixelBertConfig
from pixelbert_pl.models.visual import PixelEncoder, PixelTokens, sample_pixel_tokens
from pixelbert_pl.processing import ProcessingConfig

OUTPUTS = ("all", "text", "cls")  # which rows the last layer computes (`PixelBertModel.forward`'s `outputs`)


def _query_rows(outputs: str, text_width: int) -> int | None:
    """How many leading rows the last layer computes for `outputs`; None = every row."""
    return {"all": None, "text": text_width, "cls": 1}[outputs]


_BERT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "initializer_range",
    "pad_token_id",
)


def bert_config(config: PixelBertConfig) -> BertConfig:
    # BertConfig's dataclass_transform view hides that it accepts extra kwargs (attn_implementation) at runtime.
    fields = {name: getattr(config, name) for name in _BERT_FIELDS}
    return BertConfig(**fields, attn_implementation="sdpa")  # type: ignore[call-arg]


def resolve_config(config: PixelBertConfig) -> PixelBertConfig:
    """Take the transformer's sizes from `config.text_encoder` (HF name or local dir), when one is given."""
    if config.text_encoder is None:
        return config
    pretrained = BertConfig.from_pretrained(config.text_encoder)
    sizes = {name: getattr(pretrained, name) for name in _BERT_FIELDS}
    return config.replace(**sizes)


@dataclass
class PixelBertOutput:
    sequence_output: torch.Tensor  # (b, L, d); (b, t, d) with outputs="text", (b, 1, d) with outputs="cls"
    text_output: torch.Tensor | None  # (b, t, d); None with outputs="cls"
    cls_output: torch.Tensor  # (b, d): [CLS], through the tanh pooler only if config.use_pooler
    attention_mask: torch.Tensor  # (b, L) bool, True = attended key
    pixel_output: torch.Tensor | None = None  # (b, p, d); None unless outputs="all"
    pixel_token_mask: torch.Tensor | None = None  # (b, p) bool
    pixel_token_index: torch.Tensor | None = None  # (b, p) grid cell of each pixel token (after sampling)
    pixel_grid: tuple[int, int] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer (b, heads, L, L)


class PixelBertModel(nn.Module):
    """The shared Pixel-BERT backbone; task heads live in `heads.py` and are built by the tasks that use them."""

    def __init__(self, config: PixelBertConfig, processing: ProcessingConfig | None = None) -> None:
        super().__init__()
        self.config = config = resolve_config(config)
        if config.text_encoder is not None:
            self.bert = BertModel.from_pretrained(
                config.text_encoder, add_pooling_layer=config.use_pooler, attn_implementation="sdpa"
            )
        else:
            self.bert = BertModel(bert_config(config), add_pooling_layer=config.use_pooler)
        self.visual = PixelEncoder(config)
        # Runtime, not architecture: rows are grouped by text length into at most this many transformer calls
        # (`buckets.py`); 1 is one call for the whole batch. The tasks set it from their `text_length_buckets`.
        self.text_length_buckets = 1
        self.processing = processing or ProcessingConfig()

    @property
    def processing(self) -> ProcessingConfig:
        """How raw images and texts become this model's inputs; its normalisation runs on the model's device."""
        return self._processing

    @processing.setter
    def processing(self, processing: ProcessingConfig) -> None:
        self._processing = processing
        self.visual.image_mean, self.visual.image_std = processing.image_mean, processing.image_std
        self.visual.padded_trunk = bool(processing.pad_long_sides)

    def save_pretrained(
        self,
        directory: str | os.PathLike[str],
        tokenizer: PreTrainedTokenizerBase | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> Path:
        """Write `config.json` (the architecture, weight sources cleared: the weights are in the file, and the
        processing), `model.safetensors` and, when given, the tokenizer's files, so `from_pretrained` needs nothing
        else."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.replace(text_encoder=None, visual_weights=None)
        processing = self.processing
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory))
            processing = processing.replace(tokenizer=None)  # read from the directory itself on load
        extra = {"processing": processing.to_dict(), **(extra_config or {})}
        pretrained.write_config(directory, config.to_dict(), extra)
        pretrained.save_tensors(self.state_dict(), directory / pretrained.WEIGHTS_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike[str]) -> PixelBertModel:
        """A model from a `save_pretrained` directory or a Hugging Face Hub repo id holding one (strict load). Only the
        directory's files are read: a text encoder or trunk weights its config names are not loaded, and its
        `processing.tokenizer` is the directory when it holds the tokenizer's files."""
        directory = pretrained.resolve_directory(name_or_dir)
        config, processing = pretrained.read_model_config(directory)
        # model.safetensors replaces every weight, so a named source would only be a download or a file read.
        config = config.replace(text_encoder=None, visual_weights=None)
        if pretrained.has_tokenizer(directory):
            processing = processing.replace(tokenizer=str(directory))
        model = cls(config, processing)
        model.load_state_dict(pretrained.load_tensors(directory / pretrained.WEIGHTS_NAME))
        return model

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def encode_pixels(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> PixelTokens:
        """Run the CNN once per image; the result can serve every caption of each image (see `image_index`).
        `image_sizes` (the batches' host-side copy of what `pixel_mask` says) spares a device sync."""
        return self.visual(pixel_values, pixel_mask, image_sizes)

    def sample_pixels(
        self,
        pixels: PixelTokens,
        seeds: Sequence[int] | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PixelTokens:
        """Keep `config.pixel_sample_size` random valid tokens per row.

        With `seeds` (one int per row) each row's draw depends on its seed alone, so a sample sees the same pixels
        whatever batch it lands in and after a resume; otherwise `generator` (or the global RNG) decides.
        """
        k = self.config.pixel_sample_size
        if k is None:
            raise ValueError("sample_pixels needs config.pixel_sample_size; it is None")
        b, p = pixels.mask.shape
        if seeds is None:
            scores = torch.rand(b, p, generator=generator, device=pixels.mask.device)
        else:
            # Drawn on the host (seeds are host ints in the batches; a device tensor is read back) and sent over.
            seeds = seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds
            scores = torch.stack([torch.rand(p, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
            if pixels.mask.is_cuda:
                # From pageable memory a "non-blocking" copy waits for the GPU to drain its queue; pinned does not.
                scores = scores.pin_memory()
            scores = scores.to(pixels.mask.device, non_blocking=True)
        return sample_pixel_tokens(pixels, k, scores)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        *,
        image_sizes: Sequence[tuple[int, int]] | None = None,
        pixel_tokens: PixelTokens | None = None,
        image_index: torch.Tensor | None = None,
        sample_pixels: bool = False,
        pixel_sample_seeds: Sequence[int] | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        output_attentions: bool = False,
        outputs: str = "all",
    ) -> PixelBertOutput:
        """Encode `[CLS] text [SEP] pixels` (or the text alone when no image is given).

        Args:
            input_ids: (b, t) WordPiece ids starting with [CLS] and ending with [SEP], padded.
            attention_mask: (b, t) mask of input_ids' real (not padding) tokens (None: every token).
            pixel_values: (n, 3, H, W) normalised images.
            pixel_mask: (n, H, W) real-pixel masks of pixel_values.
            image_sizes: the n real (h, w) sizes as host ints, when known (saves reading the mask back).
            pixel_tokens: tokens from `encode_pixels`, instead of pixel_values.
            image_index: (b,) which of the n images each text row reads; default row i reads image i.
            sample_pixels: keep `config.pixel_sample_size` random tokens per row (pre-training). Ignored in eval
                mode: the paper samples only while pre-training, so that evaluation sees every pixel.
            pixel_sample_seeds: where sampling randomness comes from (see `sample_pixels`): one seed per row.
            generator: as pixel_sample_seeds: where sampling randomness comes from when no seeds are given.
            output_attentions: also return every layer's attention maps (runs eager attention).
            outputs: which rows the last layer computes: "all"; "text" ([CLS] and the text, for MLM + ITM), or
                "cls" ([CLS] alone, for ITM, VQA, NLVR2, retrieval). Keys and values still come from every row,
                so the rows kept come out the same (up to float rounding); the others' query, output and
                feed-forward projections are skipped: about 7% of a BERT-base pass with ~300 tokens for "cls".
                Rows not computed are absent: `pixel_output` is None unless "all", `text_output` None for "cls".
        """
        if outputs not in OUTPUTS:
            raise ValueError(f"outputs={outputs!r}: expected one of {OUTPUTS}")
        if output_attentions and outputs != "all":
            raise ValueError(f'output_attentions needs outputs="all" (attention maps need every row); got {outputs!r}')
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        text = self.bert.embeddings(input_ids=input_ids)
        t = text.shape[1]
        if pixel_tokens is None and pixel_values is not None:
            pixel_tokens = self.encode_pixels(pixel_values, pixel_mask, image_sizes)
        if pixel_tokens is not None:
            if image_index is not None:
                pixel_tokens = pixel_tokens.select(image_index)
            if pixel_tokens.tokens.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"{pixel_tokens.tokens.shape[0]} images for {input_ids.shape[0]} text rows; pass image_index "
                    "to map each row to its image"
                )
            if sample_pixels and self.training:
                pixel_tokens = self.sample_pixels(pixel_tokens, pixel_sample_seeds, generator)
            hidden = torch.cat([text, pixel_tokens.tokens.to(text.dtype)], dim=1)
            keys = torch.cat([attention_mask.bool(), pixel_tokens.mask], dim=1)
        else:
            hidden, keys = text, attention_mask.bool()
        # A row with no attended key (a fully padded text and no image) would be a softmax over nothing (NaN in
        # some attention kernels); let it attend its first position instead. Rows with any real key are unchanged.
        keys = torch.cat([keys[:, :1] | ~keys.any(dim=1, keepdim=True), keys[:, 1:]], dim=1)

        if self.text_length_buckets > 1 and not output_attentions:
            sequence, attentions = self._encode_by_length(hidden, keys, t, outputs), None
        else:
            sequence, attentions = self._encode(hidden, keys, output_attentions, _query_rows(outputs, t))
        cls = sequence[:, 0]
        if self.bert.pooler is not None:
            cls = self.bert.pooler(sequence)
        out = PixelBertOutput(sequence, None if outputs == "cls" else sequence[:, :t], cls, keys, attentions=attentions)
        if pixel_tokens is not None:
            if outputs == "all":
                out.pixel_output = sequence[:, t:]
            out.pixel_token_mask = pixel_tokens.mask
            p = pixel_tokens.mask.shape[1]
            index = pixel_tokens.index
            out.pixel_token_index = (
                torch.arange(p, device=keys.device).expand(keys.shape[0], p) if index is None else index
            )
            out.pixel_grid = pixel_tokens.grid
        return out

    def _encode_by_length(self, hidden: torch.Tensor, keys: torch.Tensor, t: int, outputs: str) -> torch.Tensor:
        """`_encode` in groups of rows of similar text length, each trimmed after its last attended text position
        (padded keys are masked, so real positions are unchanged); the trimmed positions come back as zeros.
        Rows that already come in group order (`collate_pretrain` sorts them by length) are not moved at all."""
        positions = torch.arange(1, t + 1, device=keys.device)
        # Last attended text position + 1 (never 0: [CLS] stays, the pooler reads it); one host sync.
        ends = (keys[:, :t] * positions).amax(dim=1).clamp(min=1).tolist()
        groups = length_buckets(ends, self.text_length_buckets, extra=hidden.shape[1] - t)
        if len(groups) == 1 and groups[0][1] == t:  # nothing to trim: one plain call, no gather or scatter
            return self._encode(hidden, keys, False, _query_rows(outputs, t))[0]

        def encode(width: int, part: torch.Tensor, part_keys: torch.Tensor) -> torch.Tensor:
            seq = self._encode(
                torch.cat([part[:, :width], part[:, t:]], dim=1),
                torch.cat([part_keys[:, :width], part_keys[:, t:]], dim=1),
                False,
                _query_rows(outputs, width),
            )[0]
            if outputs == "cls":  # [CLS]'s row alone: nothing was trimmed from it
                return seq
            trimmed = seq.new_zeros(len(part), t - width, seq.shape[-1])
            return torch.cat([seq[:, :width], trimmed, seq[:, width:]], dim=1)

        return run_grouped([(width, rows) for rows, width in groups], encode, hidden, keys)

    def _encode(
        self, hidden: torch.Tensor, keys: torch.Tensor, output_attentions: bool, queries: int | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """The transformer over the joint sequence; with `queries`, the last layer computes the first rows only."""
        bert_cfg = self.bert.config
        if not output_attentions:
            # SDPA takes a boolean keep-mask; broadcast over heads and queries.
            mask = keys[:, None, None, :]
            if queries is not None:
                return self._encode_first_rows(hidden, mask, queries), None
            return self.bert.encoder(hidden, attention_mask=mask).last_hidden_state, None
        # Eager attention adds the mask to the scores, so it needs an additive float mask.
        additive = torch.zeros(keys.shape, dtype=hidden.dtype, device=hidden.device)
        additive = additive.masked_fill(~keys, torch.finfo(hidden.dtype).min)[:, None, None, :]
        maps: list[torch.Tensor] = []
        hooks = [
            layer.attention.self.register_forward_hook(lambda _m, _i, out: maps.append(out[1]))
            for layer in self.bert.encoder.layer
        ]
        previous = bert_cfg._attn_implementation
        bert_cfg._attn_implementation = "eager"
        try:
            sequence = self.bert.encoder(hidden, attention_mask=additive).last_hidden_state
        finally:
            bert_cfg._attn_implementation = previous
            for hook in hooks:
                hook.remove()
        return sequence, tuple(maps)

    def _encode_first_rows(self, hidden: torch.Tensor, mask: torch.Tensor, rows: int) -> torch.Tensor:
        """The encoder's layers (as `BertEncoder.forward` runs them), the last one for the first `rows` rows alone:
        (b, rows, d). A method of its own so that `compile_transformer` can compile it beside the encoder."""
        *layers, last = self.bert.encoder.layer
        for layer in layers:
            hidden = layer(hidden, mask)
        return first_rows_layer(last, hidden, mask, rows)

    def compile_transformer(self, mode: str | None = None, dynamic: bool | None = None) -> None:
        """`torch.compile` the transformer in place, lazily: the encoder module (state_dict keys unchanged) and
        the path beside it whose last layer computes the first rows only (`outputs`). `dynamic` as torch.compile's
        (False: a static graph per input shape). Compiling again replaces the earlier compilation."""
        self.bert.encoder.compile(mode=mode, dynamic=dynamic)
        method = type(self)._encode_first_rows.__get__(self)  # the plain method, not an earlier compilation
        self._encode_first_rows = torch.compile(method, mode=mode, dynamic=dynamic)  # type: ignore[method-assign]


def first_rows_layer(layer: BertLayer, hidden: torch.Tensor, mask: torch.Tensor, rows: int) -> torch.Tensor:
    """`layer` (a BERT layer, SDPA attention) with only the first `rows` rows as queries: keys and values still come
    from every row, so those rows' outputs are what the full layer gives them. Uses the layer's own modules, in
    `BertLayer`'s order."""
    attention = layer.attention.self
    b = hidden.shape[0]
    heads, size = attention.num_attention_heads, attention.attention_head_size
    query = hidden[:, :rows]

    def split(x: torch.Tensor) -> torch.Tensor:  # (b, n, heads * size) -> (b, heads, n, size)
        return x.view(b, x.shape[1], heads, size).transpose(1, 2)

    context = F.scaled_dot_product_attention(
        split(attention.query(query)),
        split(attention.key(hidden)),
        split(attention.value(hidden)),
        attn_mask=mask,
        dropout_p=attention.dropout.p if layer.training else 0.0,
        scale=attention.scaling,
    )
    context = context.transpose(1, 2).reshape(b, query.shape[1], heads * size)
    return layer.feed_forward_chunk(layer.attention.output(context, query))
