"""Tokenizers: BERT WordPiece from a Hugging Face name or a local directory, and a generated vocabulary for
small corpora (the tiny preset, ShapesWorld, the tests), so nothing is ever downloaded there."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from huggingface_hub import constants

# transformers 5 exports BertTokenizerFast (an alias of BertTokenizer) lazily; its typing view lists only BertTokenizer.
from transformers import BertTokenizerFast, PreTrainedTokenizerBase  # type: ignore[attr-defined]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# What `save_pretrained` writes for a BERT WordPiece tokenizer; nothing else is read back from a checkpoint.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """`BertTokenizerFast` from a hub name (needs the network or the HF cache) or a directory / vocab.txt file.

    Raises FileNotFoundError for a path that does not exist, OSError for a name found neither locally nor on the
    Hub / in the HF cache, and ValueError for a tokenizer with no real vocabulary (only special tokens, or a probe
    sentence all [UNK]): transformers builds such a tokenizer silently, and a model trained with it sees no words."""
    name = str(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.exists():
        tokenizer = _load_local(path)
        if problem := _vocabulary_problem(tokenizer):
            raise ValueError(f"tokenizer {name!r} {problem}; {_LOCAL_FIX}")
        return tokenizer
    if _looks_like_path(name):
        raise FileNotFoundError(
            f"tokenizer {name!r}: no such file or directory ({path.absolute()}); {_LOCAL_FIX}: check the path"
        )
    try:
        tokenizer = BertTokenizerFast.from_pretrained(name)
    except (OSError, ValueError) as err:  # ValueError: huggingface_hub's HFValidationError for a malformed repo id
        raise OSError(_hub_failure(name)) from err
    # Offline and not cached, transformers 5 returns a tokenizer of the special tokens alone rather than raising.
    if _vocabulary_problem(tokenizer):
        raise OSError(_hub_failure(name))
    return tokenizer


_LOCAL_FIX = (
    "expected a directory holding vocab.txt or tokenizer.json, or a WordPiece vocab.txt file (one token a line)"
)
# Every real WordPiece vocabulary holds some of these: bert-base-uncased's words, ShapesWorld's single characters.
_PROBE = "a red circle is left of the blue square."


def _looks_like_path(name: str) -> bool:
    """Whether a missing `name` was meant as a local path, not a Hub repo id (`org/name` holds one slash too)."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or name.endswith((".txt", ".json")):
        return True
    # `sw/vocab.tx` next to a local `sw/` folder is a typo'd path; `google-bert/bert-base-uncased` stays a repo id.
    return "/" in name and Path(name).expanduser().parent.is_dir()


def _load_local(path: Path) -> PreTrainedTokenizerBase:
    if path.is_file():
        # transformers 5 takes the vocabulary file as `vocab` (the 4.x `vocab_file` keyword is silently ignored).
        return BertTokenizerFast(vocab=str(path), do_lower_case=True)
    if (path / "tokenizer_config.json").exists() or (path / "tokenizer.json").exists():
        return BertTokenizerFast.from_pretrained(str(path))
    if (path / "vocab.txt").exists():
        return BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True)
    # from_pretrained would silently build a 5-token tokenizer here.
    raise FileNotFoundError(f"tokenizer directory {path} holds no vocab.txt, tokenizer.json or tokenizer config")


def _hub_failure(name: str) -> str:
    offline = (
        "HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set, so the Hub was not asked; " if constants.HF_HUB_OFFLINE else ""
    )
    return (
        f"tokenizer {name!r} is no local file or directory, and no tokenizer of that name was found on the Hugging "
        f"Face Hub or in the HF cache ({offline}cache: {constants.HF_HUB_CACHE}). Pass a local directory holding "
        "vocab.txt or tokenizer.json, or a vocab.txt file; or download the tokenizer into the HF cache with network "
        "access (HF_HUB_OFFLINE unset), or point HF_HOME / HF_HUB_CACHE at a cache holding it; or check the name for "
        "a typo (a Hub repo id such as bert-base-uncased)"
    )


def _vocabulary_problem(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """What makes `tokenizer` useless (only special tokens, or the probe sentence all [UNK]), or None."""
    special = set(tokenizer.all_special_tokens)
    if set(tokenizer.get_vocab()) <= special:
        return f"holds only the special tokens {sorted(special)}, no words"
    probe = tokenizer.tokenize(_PROBE)
    if all(token == tokenizer.unk_token for token in probe):
        return f"reads {_PROBE!r} as {len(probe)} x {tokenizer.unk_token}: its vocabulary holds no words"
    return None


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
        tokenizer = _load_local(Path(directory))
    # Checked here, not by load_tokenizer, so the error names `source` rather than a temporary directory.
    if problem := _vocabulary_problem(tokenizer):
        raise ValueError(f"{source}: the tokenizer it carries {problem}; pass a tokenizer with a real vocabulary")
    return tokenizer


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
