"""A small word-level tokenizer built locally, for tests and examples that must not download anything.

Text is split on whitespace and punctuation (the ``tokenizers`` ``Whitespace`` pre-tokenizer: runs of word
characters, and runs of other non-space characters), and each piece is one token.  Unlike GPT-2 there is no
leading-space convention: " he" and "he" are the same token.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"


def build_word_tokenizer(words: Iterable[str], add_bos: bool = False) -> PreTrainedTokenizerFast:
    """A Hugging Face fast tokenizer whose vocabulary is the pieces of ``words`` (e.g. ``task.vocabulary()``).

    Words may be any text: each is split the way the tokenizer splits input ("isn't" gives "isn", "'", "t").
    Ids 0-3 are ``[PAD]``, ``[UNK]``, ``[BOS]``, ``[EOS]`` (pad, unknown, bos, eos); the pieces follow
    in sorted order.  With ``add_bos``, encoding with special tokens prepends ``[BOS]`` as Llama's does.
    """
    pre_tokenizer = pre_tokenizers.Whitespace()
    pieces: set[str] = set()
    for word in words:
        pieces.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(word))
    specials = [PAD, UNK, BOS, EOS]
    vocab = {token: index for index, token in enumerate(specials)}
    for piece in sorted(pieces - set(specials)):
        vocab[piece] = len(vocab)

    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizer
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS
    )
