"""Sequence classification on any backbone: pooling functions and :class:`SequenceClassifier`.

Pooling per kind of backbone (chosen by :func:`modularevo.models.load.load_model`):

* encoders (BERT, MiniLM, encoder of a seq2seq model): **mean** of the token states
  over non-padding positions. MiniLM (all-MiniLM-L6-v2) was trained as a sentence
  encoder with exactly this pooling, and its BERT pooler was not; padding is
  excluded (the original ModularEvo scripts averaged over padding, see METHODS §6.4).
* decoders (GPT-Neo, GPT-2, Llama): the state of the **last non-pad token**, found
  from the attention mask, so left and right padding give the same logits. Position
  ids are computed from the mask too, so a left-padded sequence sees the same
  positions as an unpadded one.

The backbone is ``model.backbone`` and the head ``model.classifier`` (a name in
:data:`modularevo.models.arch.HEAD_NAMES`, so it is never masked or merged).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import SequenceClassifierOutput

from modularevo.errors import InputError
from modularevo.models.hf_export import write_hf_classifier_files

POOLINGS = ("mean", "last", "cls")
HEAD_FILE = "classifier_head.safetensors"
HEAD_CONFIG = "classifier.json"


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``hidden`` (batch, seq, dim) over positions where ``mask`` (batch, seq) is 1."""
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (batch, seq, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def last_token_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """State of the last position where ``mask`` is 1 (works for left and right padding)."""
    positions = torch.arange(mask.shape[1], device=mask.device)  # (seq,)
    last = (mask.long() * positions).argmax(dim=1)  # (batch,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def cls_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """State of the first position (BERT's [CLS]); ``mask`` is ignored."""
    del mask
    return hidden[:, 0]


_POOLS = {"mean": mean_pool, "last": last_token_pool, "cls": cls_pool}


def positions_from_mask(mask: Tensor) -> Tensor:
    """Position ids counting only real tokens: left padding does not shift positions."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


class SequenceClassifier(nn.Module):
    """A backbone that returns token states, a pooling, dropout and a Linear head.

    Args:
        backbone: HF base model returning ``last_hidden_state`` (BertModel, GPTNeoModel,
            T5EncoderModel...).
        num_labels: number of classes.
        pooling: ``"mean"``, ``"last"`` or ``"cls"``.
        dropout: dropout on the pooled vector.
    """

    def __init__(
        self, backbone: nn.Module, num_labels: int, *, pooling: str, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if pooling not in _POOLS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.backbone = backbone
        self.config = backbone.config
        self.pooling = pooling
        self.num_labels = num_labels
        self.label_names = [f"LABEL_{i}" for i in range(num_labels)]
        config: Any = backbone.config
        hidden = int(config.get_text_config().hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)
        params = inspect.signature(backbone.forward).parameters
        self._takes_positions = pooling == "last" and "position_ids" in params

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """Logits (batch, num_labels); cross-entropy loss when ``labels`` are given."""
        if attention_mask is None:
            assert input_ids is not None, "pass input_ids or an attention_mask"
            attention_mask = torch.ones_like(input_ids)
        if self._takes_positions and "position_ids" not in kwargs:
            kwargs["position_ids"] = positions_from_mask(attention_mask)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        pooled = _POOLS[self.pooling](out.last_hidden_state, attention_mask)  # (batch, dim)
        logits = self.classifier(self.dropout(pooled))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def set_label_names(self, names: list[str]) -> None:
        """Name the classes (saved as ``id2label``; ``pipeline`` prints them).

        Raises:
            ValueError: if there are not ``num_labels`` names.
        """
        if len(names) != self.num_labels:
            raise ValueError(f"{len(names)} label names for {self.num_labels} classes")
        self.label_names = [str(n) for n in names]

    def save_pretrained(self, out: str | Path, **kwargs: Any) -> None:
        """Save the backbone as an HF folder plus the head and its settings beside it, and
        make the folder loadable by plain transformers (:mod:`modularevo.models.hf_export`)."""
        from safetensors.torch import save_file

        out = Path(out)
        self.backbone.save_pretrained(out, **kwargs)  # type: ignore[operator]
        head = {k: v.contiguous() for k, v in self.classifier.state_dict().items()}
        save_file(head, str(out / HEAD_FILE))
        cfg = {"num_labels": self.num_labels, "pooling": self.pooling,
               "label_names": list(self.label_names)}  # fmt: skip
        (out / HEAD_CONFIG).write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        write_hf_classifier_files(
            out, self.backbone, pooling=self.pooling, dropout=float(self.dropout.p),
            label_names=list(self.label_names),
        )  # fmt: skip

    def load_head(self, folder: str | Path) -> None:
        """Load a head saved by :meth:`save_pretrained`.

        Raises:
            InputError: the saved head has another number of labels than this classifier.
        """
        from safetensors.torch import load_file

        settings = json.loads((Path(folder) / HEAD_CONFIG).read_text(encoding="utf-8"))
        saved = settings.get("num_labels")
        if saved is not None and int(saved) != self.num_labels:
            names = settings.get("label_names") or []
            shown = f" ({', '.join(map(str, names[:5]))}{', ...' if len(names) > 5 else ''})"
            raise InputError(
                f"{str(folder)!r} holds a classifier head for {saved} labels"
                f"{shown if names else ''}, but {self.num_labels} were asked for; pass "
                f"num_labels={saved} (or the task this model was fine-tuned on)"
            )
        self.classifier.load_state_dict(load_file(str(Path(folder) / HEAD_FILE)))
        if len(settings.get("label_names", [])) == self.num_labels:
            self.label_names = list(settings["label_names"])
