"""ShapesWorld, the synthetic image-text corpus of the demo and the tests: `scenes` draws and renders them,
`language` holds the grammar of captions, questions and statements (and parses them back), `writers` writes the
corpus in the published file formats, `cli` is the `pixelbert-shapes` console script."""

from pixelbert_pl.harness.shapes.language import (
    NUMBER_WORDS,
    RELATION_MARGIN,
    RELATIONS,
    answer_question,
    caption_is_true,
    make_captions,
    make_hard_negatives,
    make_vqa,
    statement_is_true,
)
from pixelbert_pl.harness.shapes.scenes import (
    BACKGROUND,
    COLOURS,
    RGB,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    ShapesWorldConfig,
    parse_combo,
    render_scene,
    sample_scene,
)
from pixelbert_pl.harness.shapes.writers import HELDOUT_SPLIT, NLVR2_SPLITS, SPLITS, add_nlvr2, generate

__all__ = [
    "BACKGROUND",
    "COLOURS",
    "HELDOUT_SPLIT",
    "NLVR2_SPLITS",
    "NUMBER_WORDS",
    "RELATIONS",
    "RELATION_MARGIN",
    "RGB",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Scene",
    "ShapeObject",
    "ShapesWorldConfig",
    "add_nlvr2",
    "answer_question",
    "caption_is_true",
    "generate",
    "make_captions",
    "make_hard_negatives",
    "make_vqa",
    "parse_combo",
    "render_scene",
    "sample_scene",
    "statement_is_true",
]
