"""Tokenizers: BERT WordPiece from a Hugging Face name or a local directory, and a generated vocabulary for
small corpora (the tiny preset, ShapesWorld, the tests), so nothing is ever downloaded there."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

# transformers 5 exports BertTokenizerFast (an alias of BertTokenizer) lazily; its typing view lists only BertTokenizer.
from transformers import BertTokenizerFast, PreTrainedTokenizerBase  # type: ignore[attr-defined]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# What `save_pretrained` writes for a BERT WordPiece tokenizer; nothing else is read back from a checkpoint.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """`BertTokenizerFast` from a hub name (needs the network or the HF cache) or a directory / vocab.txt file."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        # transformers 5 takes the vocabulary file as `vocab` (the 4.x `vocab_file` keyword is silently ignored).
        return BertTokenizerFast(vocab=str(path), do_lower_case=True)
    if path.is_dir():
        if (path / "tokenizer_config.json").exists() or (path / "tokenizer.json").exists():
            return BertTokenizerFast.from_pretrained(str(path))
        if (path / "vocab.txt").exists():
            return BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True)
        # from_pretrained would silently build a 5-token tokenizer here.
        raise FileNotFoundError(f"tokenizer directory {path} holds no vocab.txt, tokenizer.json or tokenizer config")
    return BertTokenizerFast.from_pretrained(str(name_or_path))


def tokenizer_files(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """The tokenizer as {file name: text}: what `save_pretrained` writes, as plain strings, so a checkpoint carries
    it and `torch.load(weights_only=True)` reads it back."""
    with tempfile.TemporaryDirectory() as directory:
        tokenizer.save_pretrained(directory)
        paths = [Path(directory) / name for name in TOKENIZER_FILES]
        return {path.name: path.read_text(encoding="utf-8") for path in paths if path.is_file()}


def tokenizer_from_files(files: Mapping[str, str], source: str = "checkpoint") -> PreTrainedTokenizerBase:
    """The tokenizer `tokenizer_files` described (`source` names where the files came from, for errors)."""
    unexpected = sorted(set(files) - set(TOKENIZER_FILES))
    if unexpected or not files or not all(isinstance(text, str) for text in files.values()):
        raise ValueError(f"{source}: tokenizer files {sorted(files)}; expected text files among {TOKENIZER_FILES}")
    with tempfile.TemporaryDirectory() as directory:
        for name, text in files.items():
            (Path(directory) / name).write_text(text, encoding="utf-8")
        return load_tokenizer(directory)


def write_wordpiece_vocab(texts: Iterable[str], path: str | Path) -> Path:
    """Write a WordPiece `vocab.txt` holding every lower-cased word of `texts` whole, plus single characters
    (and their ## forms) so that any other word still tokenizes without [UNK]."""
    words: set[str] = set()
    chars: set[str] = set("abcdefghijklmnopqrstuvwxyz0123456789.,?!'-")
    for text in texts:
        for word in basic_split(text):
            words.add(word)
            chars.update(word)
    vocab = list(SPECIAL_TOKENS) + sorted(words | chars) + sorted(f"##{c}" for c in chars)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    return path


def basic_split(text: str) -> list[str]:
    """BERT's basic pre-tokenisation for ASCII text: lower case, split on spaces and around punctuation."""
    out: list[str] = []
    for chunk in text.lower().split():
        word = ""
        for ch in chunk:
            if not ch.isalnum():
                if word:
                    out.append(word)
                out.append(ch)
                word = ""
            else:
                word += ch
        if word:
            out.append(word)
    return out
