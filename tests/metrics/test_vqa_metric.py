"""VQA v2 metric: official accuracy and normalisation on tricky cases, answer vocabulary, soft targets, and the
`VQAAccuracy` torchmetric (per answer type, out-of-vocabulary questions, DDP sum)."""

from __future__ import annotations

import json
import math
import socket

import pytest
import torch
import torch.distributed as dist

from pixelbert_pl.metrics import (
    ANSWER_TYPES,
    VQAAccuracy,
    build_answer_vocab,
    exact_match_accuracy,
    normalize_vqa_answer,
    question_accuracy,
    vqa_accuracy,
    vqa_soft_targets,
)

OTHER = ["zebra"]  # filler for annotators who disagree with everything else in a case


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        # m = matches among 10 answers; leaving annotator j out leaves m (or m - 1 if j matched) others.
        # m=0: every subset has 0 matches.
        ("cat", ["dog"] * 10, 0.0),
        # m=1: 9 subsets keep the match (1/3 each), 1 drops it (0): (9 * 1/3 + 0) / 10 = 0.3
        ("cat", ["cat"] + ["dog"] * 9, 0.3),
        # m=2: (8 * 2/3 + 2 * 1/3) / 10 = 0.6
        ("cat", ["cat"] * 2 + ["dog"] * 8, 0.6),
        # m=3: (7 * min(1, 3/3) + 3 * 2/3) / 10 = 0.9
        ("cat", ["cat"] * 3 + ["dog"] * 7, 0.9),
        # m=4: (6 * 1 + 4 * min(1, 3/3)) / 10 = 1.0
        ("cat", ["cat"] * 4 + ["dog"] * 6, 1.0),
        # m=10: capped at 1.
        ("cat", ["cat"] * 10, 1.0),
        # Disagreeing annotators, m=5 for either half: (5 * 1 + 5 * 1) / 10 = 1.0; a third answer has m=0.
        ("no", ["yes"] * 5 + ["no"] * 5, 1.0),
        ("maybe", ["yes"] * 5 + ["no"] * 5, 0.0),
        # Punctuation: "yes!" -> "yes" (answers differ, so both sides are normalised); m=3: 0.9
        ("yes!", ["yes"] * 3 + ["no"] * 7, 0.9),
        # Number words: "two" -> "2", m=4: 1.0
        ("two", ["2"] * 4 + ["3"] * 6, 1.0),
        # ... on the human side too: "two", "Two", "2" all become "2", m=3: 0.9
        ("2", ["two", "Two", "2"] + ["3"] * 7, 0.9),
        # Articles: "a dog" -> "dog", m=4: 1.0
        ("a dog", ["dog"] * 4 + ["cat"] * 6, 1.0),
        # ... "the" and "an" too: "an apple" / "the apple" -> "apple", m=2: 0.6
        ("apple", ["an apple", "the apple"] + OTHER * 8, 0.6),
        # Contractions: "dont" -> "don't", m=2: 0.6
        ("dont", ["don't"] * 2 + ["no"] * 8, 0.6),
        # Lowercasing: "Yes" -> "yes", m=9: 1.0
        ("Yes", ["yes"] * 9 + ["no"], 1.0),
        # Decimal point before a digit is kept: "2.5" != "25" and != "2 5"; m=3: 0.9
        ("2.5", ["2.5"] * 3 + ["25"] * 4 + ["2 5"] * 3, 0.9),
        # A period not followed by a digit goes: "2." -> "2", m=4: 1.0
        ("2.", ["2"] * 4 + ["3"] * 6, 1.0),
        # Digit-comma-digit anywhere: every punctuation character is deleted, "1,000" -> "1000"; m=4: 1.0
        ("1,000", ["1000"] * 4 + ["1"] * 6, 1.0),
        # Otherwise a hyphen becomes a space: "t-shirt" -> "t shirt" != "tshirt"; m=0: 0.0
        ("t-shirt", ["tshirt"] * 4 + ["shirt"] * 6, 0.0),
        # ... but one hyphen next to a space deletes every hyphen: "red-white - blue" -> "redwhite blue"; m=4
        ("red-white - blue", ["redwhite blue"] * 4 + ["red"] * 6, 1.0),
        # Newlines/tabs become spaces and ends are stripped; m=4: 1.0
        (" yes\n", ["yes"] * 4 + ["no"] * 6, 1.0),
        # Only 32 periods are stripped (the official count quirk): "yes" + 40 "." keeps 8; m=0: 0.0
        ("yes" + "." * 40, ["yes"] * 4 + ["no"] * 6, 0.0),
        # All 10 answers identical: no normalisation at all, so "two" != "2" and "Yes" != "yes"; m=0: 0.0
        ("two", ["2"] * 10, 0.0),
        ("Yes", ["yes"] * 10, 0.0),
        # ... while clean-up still applies: " yes\t" -> "yes", m=10: 1.0
        (" yes\t", ["yes"] * 10, 1.0),
    ],
)
def test_vqa_accuracy_official_rules(prediction: str, answers: list[str], expected: float) -> None:
    assert len(answers) == 10
    assert vqa_accuracy(prediction, answers) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two dogs!", "2 dogs"),
        ("none", "0"),
        ("ten", "10"),
        ("The Cat", "cat"),
        ("whats", "what's"),
        ("somebody'd", "somebodyd"),  # the official table's reversed entry, kept
        ("it's", "it's"),  # apostrophes untouched
        ("10:30", "10:30"),  # colons untouched
        ("3.14", "3.14"),
        ("yes.", "yes"),
        ("red, white", "red white"),  # ", " present: commas deleted
        ("red,white", "red white"),  # no space next to it: comma becomes a space
        ("(left)", "left"),
        ("  a  b  ", "b"),
    ],
)
def test_normalize_vqa_answer(raw: str, normalised: str) -> None:
    assert normalize_vqa_answer(raw) == normalised


def test_vqa_accuracy_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="answers"):
        vqa_accuracy("yes", [])
    with pytest.raises(ValueError, match="answers='yes'"):
        vqa_accuracy("yes", "yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prediction=3"):
        vqa_accuracy(3, ["3"] * 10)  # type: ignore[arg-type]


def _annotation(question_id: int, mca: str, answers: list[str] | None = None) -> dict:
    return {
        "question_id": question_id,
        "multiple_choice_answer": mca,
        "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers or [mca] * 10)],
    }


@pytest.fixture
def annotations() -> list[dict]:
    mcas = ["yes", "yes", "yes", "Yes."] + ["two", "two", "2"] + ["a dog"] * 3 + ["cat"] + ["no"] * 2
    anns = [_annotation(i, a) for i, a in enumerate(mcas)]
    # The 10 human answers are not counted, only multiple_choice_answer.
    anns.append(_annotation(100, "no", answers=["horse"] * 10))
    # The same question listed twice counts once.
    anns.append(_annotation(0, "yes"))
    return anns


def test_build_answer_vocab_counts_normalised_multiple_choice_answers(annotations: list[dict]) -> None:
    # yes: 4 questions (ids 0-3, "Yes." normalised; id 0 repeated), no: 3, 2: 3 ("two" -> "2"), dog: 3, cat: 1.
    assert build_answer_vocab(annotations, min_count=3) == ["yes", "2", "dog", "no"]
    assert build_answer_vocab(annotations, min_count=4) == ["yes"]
    assert build_answer_vocab(annotations, min_count=1) == ["yes", "2", "dog", "no", "cat"]
    assert build_answer_vocab(annotations, min_count=5) == []
    assert "horse" not in build_answer_vocab(annotations, min_count=1)
    assert build_answer_vocab(iter(annotations), min_count=3) == ["yes", "2", "dog", "no"]  # any iterable


def test_build_answer_vocab_errors() -> None:
    with pytest.raises(ValueError, match="min_count=0"):
        build_answer_vocab([], min_count=0)
    with pytest.raises(KeyError, match="question_id=7"):
        build_answer_vocab([{"question_id": 7, "answers": [{"answer": "yes"}]}])


def test_vqa_soft_targets_table() -> None:
    vocab = {"yes": 0, "no": 1, "2": 2, "dog": 3}
    answers = ["yes"] * 4 + ["no"] * 3 + ["2"] * 2 + ["dog"]
    assert vqa_soft_targets(answers, vocab) == {0: 1.0, 1: 0.9, 2: 0.6, 3: 0.3}
    assert vqa_soft_targets(["yes"] * 10, vocab) == {0: 1.0}
    # Raw answers are counted as given: "Two" is not "2"; out-of-vocabulary answers are dropped.
    assert vqa_soft_targets(["Two"] * 5 + ["horse"] * 5, vocab) == {}


@pytest.mark.parametrize("m", range(11))
def test_soft_target_equals_official_accuracy(m: int) -> None:
    answers = ["cat"] * m + ["dog"] * (10 - m)
    assert vqa_soft_targets(answers, {"cat": 0}).get(0, 0.0) == pytest.approx(vqa_accuracy("cat", answers))


def test_vqa_accuracy_metric_per_answer_type_and_out_of_vocabulary() -> None:
    vocab = ["yes", "no", "2"]
    metric = VQAAccuracy()
    metric.update(["yes", "2"], [["yes"] * 10, ["2"] * 2 + ["3"] * 8], ["yes/no", "number"])
    # No human answer is in the vocabulary: whatever vocabulary answer is predicted scores 0, and still counts.
    oov = ["green"] * 6 + ["blue"] * 4
    assert not set(oov) & set(vocab)
    metric.update(["no", "yes"], [oov, ["no"] * 3 + ["yes"] * 7], ["other", "yes/no"])
    result = metric.compute()
    # Scores: yes/no 1.0 and 1.0, number 0.6, other 0.0 -> overall (1 + 0.6 + 0 + 1) / 4.
    assert result["overall"].item() == pytest.approx(2.6 / 4)
    assert result["yes/no"].item() == pytest.approx(1.0)
    assert result["number"].item() == pytest.approx(0.6)
    assert result["other"].item() == pytest.approx(0.0)
    assert metric.total_count.item() == 4


def test_vqa_accuracy_metric_without_answer_types_and_empty_types() -> None:
    metric = VQAAccuracy()
    metric.update(["cat"], [["cat"] + ["dog"] * 9])
    result = metric.compute()
    assert result["overall"].item() == pytest.approx(0.3)
    assert all(math.isnan(result[t].item()) for t in ("yes/no", "number", "other"))


def test_vqa_accuracy_metric_rejects_bad_batches_without_changing_state() -> None:
    metric = VQAAccuracy()
    with pytest.raises(ValueError, match="len\\(answers\\)=1"):
        metric.update(["yes", "no"], [["yes"] * 10])
    with pytest.raises(ValueError, match="answer_type='color'"):
        metric.update(["yes"], [["yes"] * 10], ["color"])
    with pytest.raises(ValueError, match="predictions='yes'"):
        metric.update("yes", [["yes"] * 10])  # type: ignore[arg-type]
    assert metric.total_count.item() == 0 and metric.type_count.sum().item() == 0


QUESTIONS = [
    ("yes", ["yes"] * 10, "yes/no"),
    ("2", ["2"] * 2 + ["3"] * 8, "number"),
    ("red", ["red"] + ["blue"] * 9, "other"),
    ("no", ["yes"] * 10, "yes/no"),
    ("3", ["3"] * 3 + ["4"] * 7, "number"),
]


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        metric = VQAAccuracy()
        mine = QUESTIONS[rank::world_size]  # uneven shards: 3 and 2 questions
        metric.update([q[0] for q in mine], [q[1] for q in mine], [q[2] for q in mine])
        result = {k: v.item() for k, v in metric.compute().items()}
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_vqa_accuracy_metric_sums_across_ddp_processes(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2)
    single = VQAAccuracy()
    single.update([q[0] for q in QUESTIONS], [q[1] for q in QUESTIONS], [q[2] for q in QUESTIONS])
    expected = {k: v.item() for k, v in single.compute().items()}
    # Hand check: scores 1, 0.6, 0.3, 0, 0.9 -> overall 0.56; yes/no 0.5, number 0.75, other 0.3.
    assert expected == pytest.approx({"overall": 0.56, "yes/no": 0.5, "number": 0.75, "other": 0.3})
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == pytest.approx(expected)


# Questions with 1 or 2 human answers (GQA-style data) train with target 1.0 and score by exact match; 3 or more keep
# the official rules. Leave-one-out over a single answer would give target 0.3 and score 0.0 to a right answer.


@pytest.mark.parametrize(
    ("answers", "targets"),
    [
        (["cat"], {0: 1.0}),
        (["Two dogs"], {2: 1.0}),  # not in the vocabulary as given: looked up in its normal form, "2 dogs"
        (["horse"], {}),
        (["cat", "cat"], {0: 1.0}),
        (["cat", "dog"], {0: 1.0, 1: 1.0}),
        (["cat", "cat", "dog"], {0: 0.6, 1: 0.3}),  # 3: official, counted as given
        (["Two dogs"] * 3, {}),
        (["cat"] + ["dog"] * 9, {0: 0.3, 1: 1.0}),  # 10: official
        (["cat"] * 3 + ["dog"] * 7, {0: 0.9, 1: 1.0}),
    ],
)
def test_soft_targets_by_number_of_answers(answers: list[str], targets: dict[int, float]) -> None:
    assert vqa_soft_targets(answers, {"cat": 0, "dog": 1, "2 dogs": 2}) == targets


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("cat", ["cat"], 1.0),
        ("dog", ["cat"], 0.0),
        ("2 dogs", ["Two dogs!"], 1.0),  # both sides normalised, as the vocabulary is
        ("Yes", ["yes"], 1.0),
        ("dog", ["cat", "dog"], 1.0),
        ("bird", ["cat", "dog"], 0.0),
    ],
)
def test_exact_match_below_three_answers(prediction: str, answers: list[str], expected: float) -> None:
    assert exact_match_accuracy(prediction, answers) == expected
    assert question_accuracy(prediction, answers) == expected
    if len(answers) == 1:
        assert vqa_accuracy(prediction, answers) == 0.0  # why: the official rule never credits one answer


@pytest.mark.parametrize("answers", [["cat", "cat", "dog"], ["Cat"] * 10, ["cat"] * 2 + ["dog"] * 8])
def test_question_accuracy_is_the_official_one_from_three_answers(answers: list[str]) -> None:
    assert question_accuracy("cat", answers) == vqa_accuracy("cat", answers)
    with pytest.raises(ValueError, match="answers"):
        question_accuracy("cat", [])


def test_one_answer_per_question_all_right_scores_one() -> None:
    metric = VQAAccuracy(by_rule=True)
    answers = [["yes"], ["2"], ["red"], ["Two dogs"]]
    predictions = ["yes", "2", "red", "2 dogs"]  # as the vocabulary holds them
    metric.update(predictions, answers, ["yes/no", "number", "other", "other"])
    result = {k: v.item() for k, v in metric.compute().items()}
    assert result["overall"] == result["exact_match"] == result["other"] == 1.0
    assert math.isnan(result["official"])  # no question scored by the official rule: not logged


def test_mixed_split_reports_each_rule_and_their_mean() -> None:
    # Official: 1.0 (10 yes) and 0.3 (1 of 10); exact match: 1.0 and 0.0.
    batch = (["yes", "cat", "red", "blue"], [["yes"] * 10, ["cat"] + ["dog"] * 9, ["red"], ["green", "teal"]])
    metric, plain = VQAAccuracy(by_rule=True), VQAAccuracy()
    metric.update(*batch)
    plain.update(*batch)
    result = {k: v.item() for k, v in metric.compute().items()}
    assert result["official"] == pytest.approx(0.65)
    assert result["exact_match"] == pytest.approx(0.5)
    assert result["overall"] == pytest.approx(2.3 / 4)
    assert metric.rule_count.tolist() == [2, 2]
    # Without by_rule: the same overall, and only the keys of before.
    assert set(plain.compute()) == {"overall", *ANSWER_TYPES} and plain.compute()["overall"] == result["overall"]
