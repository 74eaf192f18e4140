"""VQA v2: the official per-question accuracy, the 3,129-answer vocabulary and the soft training targets.

The rules are those of the official evaluation script after its 2021 fix (docs/paper_facts.md §6.1) and of
`compute_softscore.py` for the vocabulary and targets (docs/paper_facts.md §6.2). Several of their quirks are kept
on purpose because they change scores: normalisation is skipped when all human answers agree, at most 32 periods are
stripped, and a few contraction keys can never match.

The rule is per question, by its number of human answers (`OFFICIAL_MIN_ANSWERS`): with 3 or more (VQA v2's 10,
VizWiz, OK-VQA) the official soft targets and accuracy, unchanged; with 1 or 2 (GQA-style data) target 1.0 for each
given answer and exact match, because the official leave-one-out rule gives one answer 0.3 as a target and 0.0 as a
score however right the prediction is.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torchmetrics import Metric

ANSWER_TYPES = ("yes/no", "number", "other")

_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The official pattern starts with a malformed look-behind that is really a look-ahead and never fires, so only
# "not followed by a digit" matters; it also passes re.UNICODE (32) where the count goes, hence count=32 below.
_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_LIMIT = 32
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# The official table, "key:value" pairs. Its capitalised keys (Im, Ive, Id've, I'dve) are left out because words
# are lowercased first, so they never match; its reversed entry somebody'd -> somebodyd is kept, as it does match.
_CONTRACTIONS = dict(
    pair.split(":")
    for pair in """
    aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've
    couldnt've:couldn't've didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've
    hadn'tve:hadn't've hasnt:hasn't havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's howd:how'd
    howll:how'll hows:how's isnt:isn't itd:it'd itd've:it'd've it'dve:it'd've itll:it'll let's:let's maam:ma'am
    mightnt:mightn't mightnt've:mightn't've mightn'tve:mightn't've mightve:might've mustnt:mustn't
    mustve:must've neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at
    'ows'at:'ow's'at 'ow'sat:'ow's'at shant:shan't shed've:she'd've she'dve:she'd've she's:she's
    shouldve:should've shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've
    somebody'd:somebodyd somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll
    somebodys:somebody's someoned:someone'd someoned've:someone'd've someone'dve:someone'd've
    someonell:someone'll someones:someone's somethingd:something'd somethingd've:something'd've
    something'dve:something'd've somethingll:something'll thats:that's thered:there'd thered've:there'd've
    there'dve:there'd've therere:there're theres:there's theyd:they'd theyd've:they'd've they'dve:they'd've
    theyll:they'll theyre:they're theyve:they've twas:'twas wasnt:wasn't wed've:we'd've we'dve:we'd've
    weve:we've werent:weren't whatll:what'll whatre:what're whats:what's whatve:what've whens:when's
    whered:where'd wheres:where's whereve:where've whod:who'd whod've:who'd've who'dve:who'd've wholl:who'll
    whos:who's whove:who've whyll:why'll whyre:why're whys:why's wont:won't wouldve:would've
    wouldnt:wouldn't wouldnt've:wouldn't've wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll
    y'allll:y'all'll yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd
    youd've:you'd've you'dve:you'd've youll:you'll youre:you're youve:you've
    """.split()
)


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def _strip_punctuation(text: str) -> str:
    # The delete-or-space decision looks at the original string, not at the partly processed one.
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in _PUNCTUATION:
        delete = delete_all or f"{p} " in text or f" {p}" in text
        out = out.replace(p, "" if delete else " ")
    return _PERIOD.sub("", out, count=_PERIOD_LIMIT)


def _digits_articles_contractions(text: str) -> str:
    words = (_NUMBER_WORDS.get(w, w) for w in text.lower().split())
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_vqa_answer(answer: str) -> str:
    """The official answer processing: clean-up (tabs/newlines, strip), punctuation, then digits/articles/contractions.

    >>> normalize_vqa_answer("Two dogs!")
    '2 dogs'
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer={answer!r}: expected a str")
    return _digits_articles_contractions(_strip_punctuation(_clean(answer)))


def _check_answers(prediction: str, answers: Sequence[str]) -> None:
    if not isinstance(prediction, str):
        raise TypeError(f"prediction={prediction!r}: expected a str")
    if isinstance(answers, str) or not answers:
        raise ValueError(f"answers={answers!r}: expected a non-empty list of human answer strings")
    if not all(isinstance(a, str) for a in answers):
        raise TypeError(f"answers={answers!r}: expected every answer to be a str")


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official accuracy in [0, 1] of one predicted answer against the human answers (10 in VQA v2).

    Both sides are normalised only when the cleaned human answers are not all identical; otherwise the cleaned
    prediction is compared as is (case-sensitively), as the official script does. The score is min(1, matches / 3)
    averaged over the leave-one-annotator-out subsets: 0, 0.3, 0.6, 0.9, 1.0 for 0, 1, 2, 3, >= 4 matches of 10.
    """
    _check_answers(prediction, answers)
    gts = [_clean(a) for a in answers]
    pred = _clean(prediction)
    if len(set(gts)) > 1:
        gts = [_digits_articles_contractions(_strip_punctuation(a)) for a in gts]
        pred = _digits_articles_contractions(_strip_punctuation(pred))
    matches = sum(a == pred for a in gts)
    # Leaving out annotator j leaves `matches` others agreeing, minus one if j agreed.
    total = sum(min(1.0, (matches - (a == pred)) / 3) for a in gts)
    return total / len(gts)


# Questions with at least this many human answers follow the official rules; fewer are scored by exact match.
OFFICIAL_MIN_ANSWERS = 3


def uses_official_rule(answers: Sequence[str]) -> bool:
    """Whether a question with these human answers is scored (and trained) by the official VQA rules."""
    return len(answers) >= OFFICIAL_MIN_ANSWERS


def exact_match_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the prediction is one of the answers, else 0.0; both sides get the official normalisation.

    Always normalised (unlike the official rule when the annotators agree), since predictions come from an answer
    vocabulary of normalised answers: an unnormalised "Two dogs" could otherwise never match the class "2 dogs".
    """
    _check_answers(prediction, answers)
    return float(normalize_vqa_answer(prediction) in {normalize_vqa_answer(a) for a in answers})


def question_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """One question's score by its rule: `vqa_accuracy` with >= `OFFICIAL_MIN_ANSWERS` human answers, else
    `exact_match_accuracy` (leave-one-out over one answer would score every prediction 0)."""
    return (vqa_accuracy if uses_official_rule(answers) else exact_match_accuracy)(prediction, answers)


def _vocab_form(answer: str) -> str:
    """An answer as the vocabulary holds it: the punctuation and digit/article/contraction steps."""
    return _digits_articles_contractions(_strip_punctuation(answer))


def build_answer_vocab(annotations: Iterable[Mapping[str, Any]], min_count: int = 9) -> list[str]:
    """The answer classes: normalised `multiple_choice_answer`s given for at least `min_count` questions.

    Only `multiple_choice_answer` is counted (one per question, docs/paper_facts.md §6.2), never the 10 human
    `answers`. Each goes through the punctuation and digit/article/contraction steps; the reference's extra comma
    deletion is a no-op after them, since the comma is one of the punctuation characters. A question counts once even if
    listed twice (by `question_id` when present). With train+val and min_count=9 this yields 3,129 answers.

    Returns:
        answers ordered by question count (descending), ties alphabetically, so label indices are reproducible.
    """
    if min_count < 1:
        raise ValueError(f"min_count={min_count}: expected >= 1")
    questions: dict[str, set[Any]] = {}
    for i, ann in enumerate(annotations):
        if "multiple_choice_answer" not in ann:
            raise KeyError(f"annotations[{i}] (question_id={ann.get('question_id')!r}) has no 'multiple_choice_answer'")
        answer = _vocab_form(ann["multiple_choice_answer"])
        questions.setdefault(answer, set()).add(ann.get("question_id", ("index", i)))
    counts = {answer: len(ids) for answer, ids in questions.items() if len(ids) >= min_count}
    return sorted(counts, key=lambda a: (-counts[a], a))


_SOFT_SCORES = (0.0, 0.3, 0.6, 0.9, 1.0)


def vqa_soft_targets(answers: Sequence[str], answer_to_index: Mapping[str, int]) -> dict[int, float]:
    """BCE targets {label: score} from the raw human answers, by the question's rule (`uses_official_rule`).

    Official (>= `OFFICIAL_MIN_ANSWERS` answers): 0.3 / 0.6 / 0.9 / 1.0 for 1 / 2 / 3 / >= 4 annotators, the answers
    counted exactly as given, not normalised, as the reference does (docs/paper_facts.md §6.2). Fewer answers: 1.0
    for each, as exact match scores it; an answer not in the vocabulary as given is looked up in the vocabulary's
    normal form (`build_answer_vocab`). Answers outside the vocabulary are dropped, so the result may be empty.
    """
    if isinstance(answers, str):
        raise ValueError(f"answers={answers!r}: expected a list of human answer strings, not one string")
    if not uses_official_rule(answers):
        labels = (answer_to_index.get(a, answer_to_index.get(_vocab_form(a))) for a in answers)
        return {label: 1.0 for label in labels if label is not None}
    return {
        answer_to_index[answer]: _SOFT_SCORES[min(count, 4)]
        for answer, count in Counter(answers).items()
        if answer in answer_to_index
    }


class VQAAccuracy(Metric):
    """VQA accuracy as a fraction in [0, 1], overall and per answer type, summed over processes under DDP.

    Each question is scored by its rule (`question_accuracy`): the official accuracy with >= `OFFICIAL_MIN_ANSWERS`
    human answers, exact match with fewer. Every question updated counts, including those whose answers are all
    outside the answer vocabulary (they score 0 unless the prediction matches anyway). `compute()` returns
    {"overall", "yes/no", "number", "other"}, and with `by_rule` also "official" (the questions the official rule
    scored) and "exact_match" (the others), so that a log names the rule that ran; a type or rule with no
    questions is NaN. Evaluate with a sampler that does not repeat samples: DDP padding would count the repeated
    questions twice.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    # States registered by add_state; declared so that mypy sees tensors rather than Module.__getattr__'s union.
    total_score: torch.Tensor
    total_count: torch.Tensor
    type_score: torch.Tensor
    type_count: torch.Tensor
    rule_score: torch.Tensor
    rule_count: torch.Tensor

    def __init__(self, by_rule: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.by_rule = by_rule
        # float64 so that a running sum over ~2e5 questions (VQA val) keeps the official 2 decimals of percent exact.
        self.add_state("total_score", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        n = len(ANSWER_TYPES)
        self.add_state("type_score", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("type_count", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        # [official, exact match]
        self.add_state("rule_score", torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rule_count", torch.zeros(2, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self, predictions: Sequence[str], answers: Sequence[Sequence[str]], answer_types: Sequence[str] | None = None
    ) -> None:
        """Add a batch: predicted answer strings, each question's raw human answers and (optionally) answer types."""
        if isinstance(predictions, str):
            raise ValueError(f"predictions={predictions!r}: expected a list of answer strings, one per question")
        if len(answers) != len(predictions):
            raise ValueError(f"len(answers)={len(answers)}: expected len(predictions)={len(predictions)}")
        if answer_types is not None and len(answer_types) != len(predictions):
            raise ValueError(f"len(answer_types)={len(answer_types)}: expected len(predictions)={len(predictions)}")
        # Validate everything before touching the states, so a bad batch leaves them as they were.
        bad = [t for t in answer_types or () if t not in ANSWER_TYPES]
        if bad:
            raise ValueError(f"answer_type={bad[0]!r}: expected one of {ANSWER_TYPES}")
        scores = [question_accuracy(p, a) for p, a in zip(predictions, answers, strict=True)]
        self.total_score += sum(scores)
        self.total_count += len(scores)
        rules = [0 if uses_official_rule(a) else 1 for a in answers]
        self._add(self.rule_score, self.rule_count, scores, rules)
        if answer_types is not None:
            self._add(self.type_score, self.type_count, scores, [ANSWER_TYPES.index(t) for t in answer_types])

    @staticmethod
    def _add(score: torch.Tensor, count: torch.Tensor, scores: list[float], groups: list[int]) -> None:
        """Add each question's score and a count of 1 to its group's entry of `score` and `count`."""
        group_score, group_count = [0.0] * len(score), [0] * len(count)
        for s, g in zip(scores, groups, strict=True):
            group_score[g] += s
            group_count[g] += 1
        # One transfer per batch rather than one tiny in-place op per question on the metric's device.
        score += torch.tensor(group_score, dtype=torch.float64, device=score.device)
        count += torch.tensor(group_count, dtype=torch.long, device=count.device)

    def compute(self) -> dict[str, torch.Tensor]:
        """Mean accuracy as a fraction in [0, 1]; the official script reports round(100 x it, 2), in percent."""
        result = {"overall": self.total_score / self.total_count}
        per_type = self.type_score / self.type_count
        result.update({name: per_type[k] for k, name in enumerate(ANSWER_TYPES)})
        if self.by_rule:
            per_rule = self.rule_score / self.rule_count
            result.update({"official": per_rule[0], "exact_match": per_rule[1]})
        return result
