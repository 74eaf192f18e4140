"""Official evaluation metrics of the downstream tasks: VQA v2 accuracy, NLVR2 accuracy/consistency, recall@K.

Every metric is a fraction in [0, 1], never percent (the papers' tables are in percent: divide them by 100).
"""

from pixelbert_pl.metrics.mean import DeviceMean
from pixelbert_pl.metrics.nlvr2 import NLVR2Metric, nlvr2_accuracy, nlvr2_consistency, nlvr2_group_key
from pixelbert_pl.metrics.retrieval import coco_1k_recall, rerank_candidates, rerank_scores, retrieval_recall
from pixelbert_pl.metrics.vqa import (
    ANSWER_TYPES,
    OFFICIAL_MIN_ANSWERS,
    VQAAccuracy,
    build_answer_vocab,
    exact_match_accuracy,
    normalize_vqa_answer,
    question_accuracy,
    vqa_accuracy,
    vqa_soft_targets,
)

__all__ = [
    "ANSWER_TYPES",
    "OFFICIAL_MIN_ANSWERS",
    "DeviceMean",
    "NLVR2Metric",
    "VQAAccuracy",
    "build_answer_vocab",
    "coco_1k_recall",
    "exact_match_accuracy",
    "nlvr2_accuracy",
    "nlvr2_consistency",
    "nlvr2_group_key",
    "normalize_vqa_answer",
    "question_accuracy",
    "rerank_candidates",
    "rerank_scores",
    "retrieval_recall",
    "vqa_accuracy",
    "vqa_soft_targets",
]
