import sys

import huggingface_hub
import pytest

from pixelbert_pl.processing import load_tokenizer, tokenizer_files, tokenizer_from_files, write_wordpiece_vocab
from pixelbert_pl.processing.tokenizer import SPECIAL_TOKENS


def test_generated_vocab_keeps_corpus_words_whole(tmp_path) -> None:
    path = write_wordpiece_vocab(
        ["A large red circle is left of a blue square.", "How many shapes?"], tmp_path / "v.txt"
    )
    tokenizer = load_tokenizer(path)
    assert tokenizer.tokenize("a large red circle, left of a blue square?") == [
        "a", "large", "red", "circle", ",", "left", "of", "a", "blue", "square", "?",
    ]  # fmt: skip
    assert "[UNK]" not in tokenizer.tokenize("zebra")  # unseen words fall back to characters
    ids = tokenizer("red circle")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    with pytest.raises(FileNotFoundError, match=r"no vocab\.txt"):
        load_tokenizer(tmp_path)
    path.rename(tmp_path / "vocab.txt")
    assert load_tokenizer(tmp_path).vocab_size == tokenizer.vocab_size  # a directory holding vocab.txt works too


def test_real_bert_vocab_from_a_local_directory(minilm_path) -> None:
    tokenizer = load_tokenizer(minilm_path)
    assert tokenizer.vocab_size == 30522
    assert tokenizer.tokenize("A Red Circle") == ["a", "red", "circle"]


def test_missing_tokenizer_is_an_error(tmp_path) -> None:
    with pytest.raises(OSError):
        load_tokenizer(tmp_path / "nowhere")


# Issue 30: transformers builds a 5-token tokenizer (every word [UNK]) from a name that resolves to nothing.


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch) -> str:
    """Offline, with an empty HF cache (huggingface_hub reads its constants at import, so they are patched too)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return str(cache)


def test_a_mistyped_path_is_file_not_found_not_a_hub_lookup(tmp_path, monkeypatch, empty_hf_cache) -> None:
    write_wordpiece_vocab(["A red circle."], tmp_path / "sw" / "vocab.txt")
    monkeypatch.chdir(tmp_path)
    for typo in ["sw/vocab.tx", str(tmp_path / "sw" / "vocab.tx"), "./vocab.txt", "vocab.txt"]:
        with pytest.raises(FileNotFoundError, match="no such file or directory") as raised:
            load_tokenizer(typo)
        assert repr(typo) in str(raised.value) and "Hub" not in str(raised.value)
    assert len(load_tokenizer("sw/vocab.txt")) > len(SPECIAL_TOKENS)


# An `org/name` repo id with no local `org/` folder is still looked up, not taken for a mistyped path.
@pytest.mark.parametrize("name", ["bert-base-uncasd", "bert-base-uncased", "google-bert/bert-base-uncased"])
def test_a_hub_name_found_nowhere_is_an_error_saying_how_to_fix_it(name, empty_hf_cache) -> None:
    with pytest.raises(OSError) as raised:
        load_tokenizer(name)
    message = str(raised.value)
    assert not isinstance(raised.value, FileNotFoundError)
    assert repr(name) in message and empty_hf_cache in message
    assert "HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set" in message
    assert "local directory holding vocab.txt" in message and "typo" in message


def test_a_vocabulary_of_only_special_tokens_is_refused(tmp_path) -> None:
    only_special = tmp_path / "special" / "vocab.txt"
    only_special.parent.mkdir()
    only_special.write_text("\n".join(SPECIAL_TOKENS) + "\n", encoding="utf-8")
    for given in [only_special, only_special.parent]:
        with pytest.raises(ValueError, match=r"holds only the special tokens .*no words") as raised:
            load_tokenizer(given)
        assert repr(str(given)) in str(raised.value)
    # No words either: special tokens plus unused slots turn the probe sentence into nothing but [UNK].
    unused = tmp_path / "unused.txt"
    unused.write_text("\n".join([*SPECIAL_TOKENS, "[unused0]", "[unused1]"]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"x \[UNK\]: its vocabulary holds no words"):
        load_tokenizer(unused)
    # A checkpoint carrying such a tokenizer's files is refused under the checkpoint's name.
    from transformers import BertTokenizerFast

    files = tokenizer_files(BertTokenizerFast(vocab=str(only_special)))
    with pytest.raises(ValueError, match=r"^run\.ckpt: the tokenizer it carries holds only the special tokens"):
        tokenizer_from_files(files, source="run.ckpt")


def test_real_vocabularies_still_load(shapes_root, minilm_path) -> None:
    shapes = load_tokenizer(shapes_root / "vocab.txt")  # written by write_wordpiece_vocab: words and characters
    assert len(shapes) < 1000 and "[UNK]" not in shapes.tokenize("a red circle is left of the blue square.")
    bert = load_tokenizer(minilm_path)
    assert len(bert) == 30522
    for tokenizer in (shapes, bert):
        restored = tokenizer_from_files(tokenizer_files(tokenizer))
        assert restored.get_vocab() == tokenizer.get_vocab()


def test_fit_and_check_data_refuse_a_mistyped_tokenizer(shapes_root, tmp_path, monkeypatch, capsys) -> None:
    from pixelbert_pl import check_data, cli
    from pixelbert_pl.harness.demo import CONFIGS

    monkeypatch.setattr(sys, "argv", ["pixelbert"])
    monkeypatch.chdir(shapes_root.parent)
    vqa = str(CONFIGS / "vqa_shapes.yaml")
    typo = f"{shapes_root.name}/vocab.tx"  # relative, as in the issue: also a well-formed Hub repo id
    data = ["--data.init_args.root", str(shapes_root), "--data.init_args.tokenizer", typo]
    with pytest.raises(FileNotFoundError, match="no such file or directory") as raised:
        cli.main(["fit", "--config", vqa, *data, "--data.init_args.num_workers", "0", "--trainer.max_steps", "1",
                  "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])  # fmt: skip
    assert repr(typo) in str(raised.value)
    assert not list(tmp_path.rglob("*.ckpt"))  # refused before training
    assert check_data.main(["--config", vqa, *data, "--workers", "1"]) == 2  # cannot start
    assert repr(typo) in capsys.readouterr().err
