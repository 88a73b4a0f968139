"""Tokenizers: loading the one saved beside a checkpoint, and a small word-level one built locally (for tests and
examples that must not download anything).

Text is split on whitespace and punctuation (the ``tokenizers`` ``Whitespace`` pre-tokenizer: runs of word
characters, and runs of other non-space characters), and each piece is one token.  Unlike GPT-2 there is no
leading-space convention: " he" and "he" are the same token.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from ..errors import EpverifyError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
# The classes a generic fast tokenizer (such as `build_word_tokenizer`'s) is saved as. transformers replaces the
# declared class by the model family's own for some families (Qwen2, Phi-3), which would re-read a word-level
# vocabulary as byte-level BPE; such a tokenizer is loaded as the class it declares.
GENERIC_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


def load_tokenizer(path: str | Path):
    """The tokenizer saved beside a local checkpoint, as the class it was saved as."""
    from transformers import AutoTokenizer

    path = Path(path)
    if path.is_dir() and not any((path / name).exists() for name in TOKENIZER_FILES):
        raise EpverifyError(f"no tokenizer files in {path} (looked for {', '.join(TOKENIZER_FILES)}): save the"
                            " tokenizer beside the model with tokenizer.save_pretrained(path)")
    try:
        if _declared_class(path) in GENERIC_CLASSES and (path / "tokenizer.json").is_file():
            return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise EpverifyError(
            f"no tokenizer could be loaded from {path} ({str(err).splitlines()[0]}): save the tokenizer beside the"
            " model with tokenizer.save_pretrained(path)"
        ) from None


def _declared_class(path: Path) -> str | None:
    try:
        return json.loads((path / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
# Special tokens as model families name them (pad, unknown, bos, eos); None: the family's tokenizer has none.
# Gemma's and Llama 3's tokenizers prepend their BOS to every encoded text; Llama 3's has no pad token.
STYLES = {
    "plain": (PAD, UNK, BOS, EOS),
    "gemma": ("<pad>", "<unk>", "<bos>", "<eos>"),
    "llama3": (None, "<|reserved_special_token_0|>", "<|begin_of_text|>", "<|end_of_text|>"),
}


def build_word_tokenizer(words: Iterable[str], add_bos: bool = False, style: str = "plain") -> PreTrainedTokenizerFast:
    """A Hugging Face fast tokenizer whose vocabulary is the pieces of ``words`` (e.g. ``task.vocabulary()``).

    Words may be any text: each is split the way the tokenizer splits input ("isn't" gives "isn", "'", "t").
    The first ids are the special tokens of ``style`` (`STYLES`: ``[PAD]``, ``[UNK]``, ``[BOS]``, ``[EOS]`` for
    "plain"; Gemma's ``<bos>``...; Llama 3's ``<|begin_of_text|>``..., without a pad token); the pieces follow in
    sorted order. With ``add_bos`` (always for the "gemma" and "llama3" styles), encoding with special tokens
    prepends the BOS token, as those families' tokenizers do.
    """
    pad, unk, bos, eos = STYLES[style]
    add_bos = add_bos or style != "plain"
    pre_tokenizer = pre_tokenizers.Whitespace()
    pieces: set[str] = set()
    for word in words:
        pieces.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(word))
    specials = [t for t in (pad, unk, bos, eos) if t is not None]
    vocab = {token: index for index, token in enumerate(specials)}
    for piece in sorted(pieces - set(specials)):
        vocab[piece] = len(vocab)

    backend = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizer
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
        )
    named = {"pad_token": pad, "unk_token": unk, "bos_token": bos, "eos_token": eos}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **{k: v for k, v in named.items() if v is not None})
