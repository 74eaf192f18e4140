"""Every task model: saved and loaded back (`save_pretrained` / `from_pretrained`, safetensors and JSON only) it gives
identical outputs, predicts from raw inputs through its own `collate` and `postprocess`, and every parameter of a
training forward gets a finite gradient."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pixelbert_pl import PixelBertProcessor, Predictor
from pixelbert_pl.models import (
    PixelBertForImageTextClassification,
    PixelBertForImageTextRetrieval,
    PixelBertForNLVR2,
    PixelBertForPreTraining,
    PixelBertForQuestionAnswering,
    PixelBertTaskModel,
    create_model,
)
from pixelbert_pl.processing import ProcessingConfig

BUILDERS = {
    "pretraining": lambda b: PixelBertForPreTraining(b),
    "question_answering": lambda b: PixelBertForQuestionAnswering(b, ["yes", "no", "red", "two"]),
    "nlvr2": lambda b: PixelBertForNLVR2(b),
    "retrieval": lambda b: PixelBertForImageTextRetrieval(b, hard_negatives=2),
    "classification": lambda b: PixelBertForImageTextClassification(b, ["entailment", "neutral", "contradiction"]),
    "classification_pairs": lambda b: PixelBertForImageTextClassification(b, ["false", "true"], images_per_sample=2),
}
# What each task's postprocess gives per sample.
FIELDS = {
    "pretraining": {"match"},
    "question_answering": {"answer", "score"},
    "nlvr2": {"prediction", "score"},
    "retrieval": {"score"},
    "classification": {"label", "score", "scores"},
    "classification_pairs": {"label", "score", "scores"},
}


@pytest.fixture(scope="module")
def processor(shapes_root: Path) -> PixelBertProcessor:
    config = ProcessingConfig(tokenizer=str(shapes_root / "vocab.txt"), image_min_size=64, image_max_size=96)
    return PixelBertProcessor.from_config(config)


def _model(name: str, processor: PixelBertProcessor) -> PixelBertTaskModel:
    torch.manual_seed(0)
    backbone = create_model("pixelbert_tiny", processor.config, vocab_size=len(processor.tokenizer))
    return BUILDERS[name](backbone).eval()


def _inputs(model: PixelBertTaskModel, shapes_root: Path) -> list:
    images = sorted((shapes_root / "images").iterdir())[:6]
    columns = {"text": ["a red circle", "is there a square?", "two blue triangles"]}
    for k, name in enumerate(n for n in model.inputs if n != "text"):
        columns[name] = [str(p) for p in images[3 * k : 3 * k + 3]]
    return [columns[name] for name in model.inputs]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_saved_task_model_loads_back_identical(name, processor, shapes_root, tmp_path) -> None:
    model = _model(name, processor)
    with torch.no_grad():  # heads start from random weights: away from any default initialisation
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    directory = model.save_pretrained(tmp_path / name, processor)
    loaded = PixelBertTaskModel.from_pretrained(directory)
    assert type(loaded) is type(model) and loaded.task_args() == model.task_args()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    before, after = Predictor(model, processor), Predictor.from_pretrained(directory)
    inputs = _inputs(model, shapes_root)
    predicted = before.predict(*inputs)
    assert after.predict(*inputs) == predicted
    assert len(predicted) == 3 and all(set(row) == FIELDS[name] for row in predicted)
    single = before.predict(*[column[0] for column in inputs])  # one sample in, one result out
    assert single.keys() == predicted[0].keys()
    assert after.processor.config == processor.config.replace(tokenizer=str(directory))


@pytest.mark.parametrize(
    "name", ["question_answering", "nlvr2", "classification", "classification_pairs", "pretraining"]
)
def test_every_parameter_of_a_task_model_gets_a_gradient(name, processor, shapes_root) -> None:
    model = _model(name, processor).train()
    inputs = _inputs(model, shapes_root)
    items = []
    for i, row in enumerate(zip(*inputs, strict=True)):
        *images, text = row
        items.append({"images": [processor.image(p) for p in images], "image_keys": list(images),
                      "input_ids": processor.token_ids(text), "sample_id": i})  # fmt: skip
    batch = model.collate(items, processor.padding, processor.pad_token_id)
    if name == "question_answering":
        batch.targets[:, 1] = 1.0
    elif name in ("nlvr2", "classification", "classification_pairs"):
        batch.labels.fill_(1)
    elif name == "pretraining":
        batch.mlm_labels[:, 1] = batch.input_ids[:, 1]
        batch.num_masked = int((batch.mlm_labels != -100).sum())
        batch.itm_labels.fill_(1)
    parts = model.loss(model(batch), batch)
    sum(parts.values()).backward()  # type: ignore[union-attr]
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == [] and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_config_that_names_an_unregistered_task_model_runs_nothing(processor, tmp_path) -> None:
    import json

    directory = _model("nlvr2", processor).save_pretrained(tmp_path / "m", processor)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "task_model": "os.system"}))
    with pytest.raises(ValueError, match=r"task model 'os.system' is not registered"):
        PixelBertTaskModel.from_pretrained(directory)
    with pytest.raises(TypeError, match=r"holds a PixelBertForNLVR2, not a PixelBertForPreTraining"):
        (directory / "config.json").write_text(json.dumps(config))
        PixelBertForPreTraining.from_pretrained(directory)


def test_an_option_the_task_does_not_take_is_an_error_not_ignored(processor, shapes_root) -> None:
    model = _model("classification", processor)
    image, text = (column[0] for column in _inputs(model, shapes_root))
    with pytest.raises(TypeError, match=r"takes no option \['top_k'\]; its inputs are \['image', 'text'\]"):
        Predictor(model, processor).predict(image, text, top_k=2)
    answers = Predictor(_model("question_answering", processor), processor).predict(image, text, top_k=2)
    assert len(answers["answers"]) == 2
