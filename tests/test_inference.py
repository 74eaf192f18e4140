"""`Predictor` on the tiny preset: what validation computes, for paths, PIL images and tensors alike, single or
batched; save_pretrained / from_pretrained and the export command give identical answers."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from numerics import FLOAT32, assert_close_scaled
from pixelbert_pl import Predictor
from pixelbert_pl.export import main as export
from pixelbert_pl.harness.datamodules import (
    ShapesWorldNLVR2DataModule,
    ShapesWorldRetrievalDataModule,
    ShapesWorldVQADataModule,
)
from pixelbert_pl.tasks import NLVR2Task, PretrainTask, RetrievalTask, VQATask


def _vocab(root: Path) -> str:
    return str(root / "vocab.txt")


def _checkpoint(task, path: Path) -> Path:
    """What `Trainer.save_checkpoint` writes of a task: its weights, hyper-parameters and `on_save_checkpoint`'s."""
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def vqa(shapes_root, tmp_path_factory):
    dm = ShapesWorldVQADataModule(root=str(shapes_root), batch_size=4, num_workers=0)
    torch.manual_seed(0)
    task = VQATask(preset="pixelbert_tiny", vocab_size=dm.vocab_size, answer_vocab=dm.answer_vocab)
    path = _checkpoint(task, tmp_path_factory.mktemp("vqa") / "vqa.ckpt")
    return dm, task, Predictor.from_checkpoint(path, tokenizer=_vocab(shapes_root))


def test_answer_is_what_validation_computes(vqa) -> None:
    dm, task, predictor = vqa
    records = dm.records("val")[:4]
    batch = next(iter(dm.val_dataloader()))
    expected = task.eval()(batch).sigmoid().max(dim=-1)
    answers = predictor.answer([r.image_path for r in records], [r.question for r in records])
    assert [a for a, _ in answers] == [task.answer_vocab[i] for i in expected.indices.tolist()]
    assert_close_scaled(torch.tensor([s for _, s in answers]), expected.values, FLOAT32)


def test_paths_pil_images_and_tensors_agree_and_top_k(vqa) -> None:
    dm, _, predictor = vqa
    record = dm.records("val")[0]
    pil = Image.open(record.image_path).convert("RGB")
    as_tensor = torch.from_numpy(__import__("numpy").asarray(pil)).permute(2, 0, 1).contiguous()
    by_path = predictor.answer(record.image_path, record.question)
    assert isinstance(by_path, tuple) and isinstance(by_path[0], str) and 0 <= by_path[1] <= 1
    assert predictor.answer(pil, record.question) == by_path
    assert predictor.answer(as_tensor, record.question) == by_path
    assert predictor.answer(as_tensor.float() / 255, record.question) == by_path
    top = predictor.answer(record.image_path, record.question, top_k=3)
    assert len(top) == 3 and top[0] == by_path and top[0][1] >= top[1][1] >= top[2][1]
    # One image for several questions.
    assert len(predictor.answer(record.image_path, [record.question, "how many shapes are there?"])) == 2


def test_save_pretrained_and_export_round_trip(vqa, tmp_path, shapes_root) -> None:
    dm, task, predictor = vqa
    records = dm.records("val")[:3]
    images, questions = [r.image_path for r in records], [r.question for r in records]
    expected = predictor.answer(images, questions, top_k=2)
    predictor.save_pretrained(tmp_path / "saved")
    assert {p.name for p in (tmp_path / "saved").iterdir()} >= {"config.json", "model.safetensors", "heads.safetensors"}
    loaded = Predictor.from_pretrained(tmp_path / "saved")
    assert loaded.answer(images, questions, top_k=2) == expected
    assert loaded.model.answer_vocab == task.answer_vocab and loaded.model.model.config == task.model.config
    assert loaded.processing == predictor.processing.replace(tokenizer=loaded.processing.tokenizer)

    checkpoint = _checkpoint(task, tmp_path / "task.ckpt")
    assert export([str(checkpoint), str(tmp_path / "exported"), "--tokenizer", _vocab(shapes_root)]) == 0
    assert Predictor.from_pretrained(tmp_path / "exported").answer(images, questions, top_k=2) == expected


def _untrained(task_cls, module, root: Path, tmp_path: Path, **kwargs):
    """A data module, a seeded untrained task and a Predictor loaded from its checkpoint."""
    dm = module(root=str(root), batch_size=4, num_workers=0)
    torch.manual_seed(0)
    task = task_cls(preset="pixelbert_tiny", vocab_size=dm.vocab_size)
    path = _checkpoint(task, tmp_path / "task.ckpt")
    return dm, task, Predictor.from_checkpoint(path, tokenizer=_vocab(root), **kwargs)


def test_match_and_rank_with_a_pretrained_model(shapes_root, tmp_path) -> None:
    dm, _, predictor = _untrained(PretrainTask, ShapesWorldRetrievalDataModule, shapes_root, tmp_path)
    records = dm.records("val")[:3]
    images, captions = [r.image_path for r in records], [r.captions[0] for r in records]
    probabilities = predictor.match(images, captions)
    assert len(probabilities) == 3 and all(0 <= p <= 1 for p in probabilities)
    assert_close_scaled(
        torch.tensor([predictor.match(images[1], captions[1])]), torch.tensor(probabilities[1:2]), FLOAT32
    )
    scores = predictor.rank(images, captions)
    assert scores.shape == (3, 3)
    # rank's log-odds and match's probability are one score: sigmoid(log-odds) = probability on the diagonal.
    assert_close_scaled(torch.sigmoid(scores.diagonal()), torch.tensor(probabilities), FLOAT32)
    with pytest.raises(TypeError, match="VQA model"):
        predictor.answer(images[0], "what colour?")


def test_rank_with_a_retrieval_model_is_its_score_matrix(shapes_root, tmp_path) -> None:
    dm, _, predictor = _untrained(RetrievalTask, ShapesWorldRetrievalDataModule, shapes_root, tmp_path)
    records = dm.records("val")[:2]
    scores = predictor.rank([r.image_path for r in records], [c for r in records for c in r.captions[:2]])
    assert scores.shape == (2, 4) and scores.dtype == torch.float32 and torch.isfinite(scores).all()


def test_nlvr2_and_bf16(shapes_root, tmp_path) -> None:
    dm, task, predictor = _untrained(NLVR2Task, ShapesWorldNLVR2DataModule, shapes_root, tmp_path)
    records = dm.records("val")[:2]
    lefts, rights, statements = (
        [r.left_path for r in records],
        [r.right_path for r in records],
        [r.sentence for r in records],
    )
    probabilities = predictor.nlvr2(lefts, rights, statements)
    assert len(probabilities) == 2 and all(0 <= p <= 1 for p in probabilities)
    batch = next(iter(dm.val_dataloader()))
    expected = task.eval()(batch).softmax(-1)[:2, 1].tolist()
    assert_close_scaled(torch.tensor(probabilities), torch.tensor(expected), FLOAT32)
    half = Predictor.from_checkpoint(tmp_path / "task.ckpt", tokenizer=_vocab(shapes_root), dtype=torch.bfloat16)
    assert half.nlvr2(lefts, rights, statements) == pytest.approx(probabilities, abs=0.05)


def test_from_pretrained_runs_no_code_a_config_names(vqa, tmp_path) -> None:
    """A downloaded directory names its task and arguments: only registered tasks are built, never an import path,
    and no argument that would load or download weights."""
    import json

    _, _, predictor = vqa
    directory = predictor.save_pretrained(tmp_path / "saved")
    config = json.loads((directory / "config.json").read_text())
    assert config["task_model"] == "PixelBertForQuestionAnswering"
    (tmp_path / "hubconf.py").write_text("raise SystemExit('planted code ran')\n")
    planted = {"repo_or_dir": str(tmp_path), "model": "x", "source": "local"}
    legacy = {k: v for k, v in config.items() if k != "task_model"}  # an export of the Lightning task's name
    for document, message in (
        ({**config, "task_model": "torch.hub.load", "task_args": planted},
         "task model 'torch.hub.load' is not registered"),
        ({**legacy, "task": "torch.hub.load", "task_args": planted}, "written for the task 'torch.hub.load'"),
        ({**config, "task_args": {**config["task_args"], "init_from": str(tmp_path / "other.ckpt")}},
         r"task_args \['answer_vocab', 'init_from'\] do not fit PixelBertForQuestionAnswering"),
    ):  # fmt: skip
        (directory / "config.json").write_text(json.dumps(document))
        with pytest.raises(ValueError, match=message):
            Predictor.from_pretrained(directory)


@pytest.fixture
def nothing_else_is_read(monkeypatch) -> None:
    """Every way a config could reach past the export's files (the Hub, a BERT checkpoint, a pickled weights file)
    raises."""
    import huggingface_hub
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError(f"loading an export read something else: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(transformers.BertConfig, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.BertModel, "from_pretrained", refuse)
    monkeypatch.setattr(torch, "load", refuse)


@pytest.mark.parametrize(
    "field, value", [("text_encoder", "someone/evil-bert"), ("visual_weights", "{tmp}/planted.pt")]
)
def test_an_export_loads_only_its_own_files(vqa, tmp_path, nothing_else_is_read, field, value) -> None:
    """A config.json naming a Hub BERT, a weights file or another tokenizer loads the directory's weights and
    tokenizer and reads none of those."""
    import json

    from pixelbert_pl import PixelBertModel

    dm, task, predictor = vqa
    records = dm.records("val")[:3]
    images, questions = [r.image_path for r in records], [r.question for r in records]
    directory = predictor.save_pretrained(tmp_path / "saved")
    expected = Predictor.from_pretrained(directory).answer(images, questions, top_k=2)
    (tmp_path / "planted.pt").write_bytes(b"\x80\x02 not a weights file")
    config = json.loads((directory / "config.json").read_text())
    config["model"][field] = value.format(tmp=tmp_path)
    config["processing"]["tokenizer"] = str(tmp_path / "no_such_tokenizer")
    (directory / "config.json").write_text(json.dumps(config))

    loaded = Predictor.from_pretrained(directory)
    assert loaded.answer(images, questions, top_k=2) == expected
    assert loaded.processing.tokenizer == str(directory)
    model = PixelBertModel.from_pretrained(directory)
    assert model.config.text_encoder is None and model.config.visual_weights is None
    assert all(torch.equal(v, task.model.state_dict()[k]) for k, v in model.state_dict().items())


def test_an_export_without_tokenizer_files_is_refused(vqa, tmp_path, shapes_root) -> None:
    """A tokenizer the config names is not a stand-in for the directory's own files."""
    import json

    _, _, predictor = vqa
    directory = predictor.save_pretrained(tmp_path / "saved")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (directory / name).unlink(missing_ok=True)
    config = json.loads((directory / "config.json").read_text())
    config["processing"]["tokenizer"] = _vocab(shapes_root)
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match=rf"{directory}: no tokenizer files"):
        Predictor.from_pretrained(directory)


def test_one_image_or_one_caption_is_one_item_for_rank(shapes_root, tmp_path) -> None:
    dm, _, predictor = _untrained(RetrievalTask, ShapesWorldRetrievalDataModule, shapes_root, tmp_path)
    records = dm.records("val")[:3]
    paths, captions = [r.image_path for r in records], [r.captions[0] for r in records]
    scores = predictor.rank(paths, captions)
    pil = Image.open(paths[0]).convert("RGB")
    as_tensor = torch.from_numpy(__import__("numpy").asarray(pil)).permute(2, 0, 1).contiguous()
    for one in (str(paths[0]), Path(paths[0]), pil, as_tensor, as_tensor.float() / 255):
        row = predictor.rank(one, captions)
        assert row.shape == (1, 3), type(one)
        assert_close_scaled(row, predictor.rank([one], captions), FLOAT32)
        assert_close_scaled(row, scores[:1], FLOAT32)
    column = predictor.rank(paths, captions[1])
    assert column.shape == (3, 1)
    assert_close_scaled(column, predictor.rank(paths, [captions[1]]), FLOAT32)
    assert_close_scaled(column, scores[:, 1:2], FLOAT32)
    # A batch tensor (n, 3, h, w) is n images.
    assert predictor.rank(torch.stack([as_tensor, as_tensor]), captions).shape == (2, 3)


def test_one_question_goes_with_every_image(vqa) -> None:
    dm, _, predictor = vqa
    records = dm.records("val")[:2]
    question = records[0].question
    answers = predictor.answer([r.image_path for r in records], question)
    alone = [predictor.answer(r.image_path, question) for r in records]
    assert [a for a, _ in answers] == [a for a, _ in alone]
    assert_close_scaled(torch.tensor([p for _, p in answers]), torch.tensor([p for _, p in alone]), FLOAT32)
    with pytest.raises(ValueError, match=r"lists of different lengths \{'image': 2, 'question': 3\}"):
        predictor.answer([r.image_path for r in records], [question] * 3)


def test_top_k_beyond_the_answers_names_their_number(vqa) -> None:
    dm, task, predictor = vqa
    record = dm.records("val")[0]
    answers = len(task.answer_vocab)
    for top_k in (10**6, 0):
        with pytest.raises(ValueError, match=rf"top_k={top_k}: expected 1\.\.{answers}"):
            predictor.answer(record.image_path, record.question, top_k=top_k)
    assert len(predictor.answer(record.image_path, record.question, top_k=answers)) == answers


def test_tensors_that_are_no_image_are_refused_by_name(vqa, shapes_root, tmp_path) -> None:
    """NaN or inf pixels (not read as black) and channels-last tensors, named by their place in the call."""
    dm, _, predictor = vqa
    record = dm.records("val")[0]
    good = torch.rand(3, 48, 48)
    nan, inf = good.clone(), good.clone()
    nan[0, 0, 0], inf[1, 2, 3] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"^image: a torch.float32 tensor \(3, 48, 48\) with 1 NaN or infinite"):
        predictor.answer(nan, record.question)
    with pytest.raises(ValueError, match=r"^image\[1\]: .* 1 NaN or infinite"):
        predictor.answer([good, inf], [record.question, record.question])
    with pytest.raises(ValueError, match=r"^image: a tensor of shape \(48, 48, 3\); expected one image \(3, h, w\)"):
        predictor.processor.image(good.permute(1, 2, 0))
    _, _, ranker = _untrained(RetrievalTask, ShapesWorldRetrievalDataModule, shapes_root, tmp_path)
    with pytest.raises(ValueError, match=r"^images\[2\]: .* NaN"):
        ranker.rank([good, good, nan], ["a red circle"])


def test_one_image_asked_several_questions_goes_through_the_cnn_once(vqa) -> None:
    dm, _, predictor = vqa
    records = dm.records("val")[:3]
    image, questions = records[0].image_path, [r.question for r in records]
    seen: list[int] = []
    trunk = predictor.model.model.visual.trunk
    hook = trunk.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        answers = predictor.answer(image, questions)
    finally:
        hook.remove()
    assert sum(seen) == 1  # one image row, shared by the three questions
    alone = [predictor.answer(image, q) for q in questions]
    assert [a for a, _ in answers] == [a for a, _ in alone]
    assert_close_scaled(torch.tensor([p for _, p in answers]), torch.tensor([p for _, p in alone]), FLOAT32)
