"""Tokenizers built offline: a character tokenizer for tiny test models, a byte-level BPE trainer.

Why the pretrained GPT-Neo gets its own byte-level BPE rather than MiniLM's WordPiece:
MiniLM's vocabulary is uncased and its pre-tokenizer drops whitespace, so Python
indentation, newlines and letter case, which the code and law corpora depend on,
would be lost; byte-level BPE is lossless for every language in the multilingual
corpus. An 8k vocabulary also keeps the embedding matrix (tied to the LM head)
from dominating a small model: 8,192 x 256 = 2.1M parameters against 7.8M for
MiniLM's 30,522 entries, which makes every training step cheaper.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer
from transformers import PreTrainedTokenizerFast

TINY_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BPE_SPECIALS = ("<|endoftext|>", "<|pad|>", "<|unk|>")


def tiny_char_tokenizer(*, template: str = "none") -> PreTrainedTokenizerFast:
    """A lower-case character tokenizer with a 128-entry vocabulary, built in memory.

    Args:
        template: ``"bert"`` wraps inputs as ``[CLS] x [SEP]``, ``"eos"`` appends
            ``[SEP]`` (T5-style), ``"none"`` adds nothing (decoders).

    Returns:
        A fast tokenizer whose ids are < 128; [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.
    """
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation + " \n\t"))
    vocab = {tok: i for i, tok in enumerate([*TINY_SPECIALS, *chars])}
    for i in range(len(vocab), 128):
        vocab[f"[unused{i}]"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    if template == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
    elif template == "eos":
        tok.post_processor = processors.TemplateProcessing(
            single="$A [SEP]", pair="$A [SEP] $B [SEP]", special_tokens=[("[SEP]", sep_id)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[CLS]",
        eos_token="[SEP]",
    )


def train_bpe_tokenizer(
    texts: Iterable[str], *, vocab_size: int, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (GPT-2 style, lossless) on ``texts``.

    Args:
        texts: training documents; iterated once, in order (deterministic result).
        vocab_size: total vocabulary size including the 256 byte symbols and specials.
        min_frequency: minimum pair count for a merge.

    Returns:
        A fast tokenizer with ``<|endoftext|>`` as bos/eos and a separate ``<|pad|>``
        (a distinct pad id keeps "last non-pad token" pooling unambiguous).
    """
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BPE_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_batches(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
    )


def _batches(texts: Iterable[str], size: int = 256) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
