import pytest

from pixelbert_pl.processing import load_tokenizer, write_wordpiece_vocab


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
