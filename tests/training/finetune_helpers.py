"""Tiny in-memory classifier, tokenizer, dataset and module for the fine-tuning tests."""

from __future__ import annotations

from pathlib import Path

import datasets
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

from modularevo.modules import ModuleMask, fingerprint, save_module

# The test machines are small and shared: one thread avoids OpenMP oversubscription.
torch.set_num_threads(1)

N_WORDS = 30
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(SPECIAL + [f"w{i}" for i in range(N_WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # pyright: ignore[reportAttributeAccessIssue]
    tok.post_processor = processors.TemplateProcessing(  # pyright: ignore[reportAttributeAccessIssue]
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]",
    )  # fmt: skip


def tiny_classifier(
    num_labels: int = 3, seed: int = 0, dropout: float = 0.1
) -> BertForSequenceClassification:
    cfg = BertConfig(
        vocab_size=len(SPECIAL) + N_WORDS, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
        num_labels=num_labels, hidden_dropout_prob=dropout, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return BertForSequenceClassification(cfg)


def tiny_dataset(
    n_train: int = 96, n_eval: int = 24, num_labels: int = 3, seed: int = 0
) -> datasets.DatasetDict:
    """Texts of 4-12 words; the label is the word group (w mod num_labels) that dominates."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> datasets.Dataset:
        texts, labels = [], []
        for _ in range(n):
            label = int(torch.randint(num_labels, (1,), generator=g))
            length = int(torch.randint(4, 13, (1,), generator=g))
            words = []
            for _ in range(length):
                if float(torch.rand(1, generator=g)) < 0.7:
                    k = int(torch.randint(N_WORDS // num_labels, (1,), generator=g))
                    words.append(f"w{k * num_labels + label}")
                else:
                    words.append(f"w{int(torch.randint(N_WORDS, (1,), generator=g))}")
            texts.append(" ".join(words))
            labels.append(label)
        features = datasets.Features(
            {"text": datasets.Value("string"),
             "label": datasets.ClassLabel(names=[f"c{i}" for i in range(num_labels)])}
        )  # fmt: skip
        return datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)

    return datasets.DatasetDict(
        {"train": split(n_train), "validation": split(n_eval), "test": split(n_eval)}
    )


def random_module(
    model: torch.nn.Module, path: Path, *, density: float = 0.25, seed: int = 0
) -> ModuleMask:
    """A random module over every Linear weight and bias outside the classifier."""
    g = torch.Generator().manual_seed(seed)
    masked = {
        n: p for n, p in model.named_parameters()
        if not n.startswith("classifier") and ".encoder." in f".{n}" and "LayerNorm" not in n
    }  # fmt: skip
    masks = {n: torch.rand(p.shape, generator=g) < density for n, p in masked.items()}
    module = ModuleMask(
        masks=masks, domain="test",
        arch_fingerprint=fingerprint(masked.items(), values=False),
        base_fingerprint=fingerprint(masked.items()),
    )  # fmt: skip
    save_module(module, path)
    return module
