"""Classifier folders that plain ``transformers`` loads: ``AutoModelForSequenceClassification``
and ``pipeline("text-classification")`` with the trained pooling, head and label names.

A fine-tuned :class:`~modularevo.models.heads.SequenceClassifier` is saved as its backbone's
HF folder (what merges and evolution read: the backbone's own tensor names) plus the head
(``classifier_head.safetensors``) and its settings (``classifier.json``). No class of
``transformers`` pools the way the project trains (mean over real tokens for encoders, the
last real token for decoders, with a bias in the head), so the folder also carries
:data:`MODELING_FILE`, a short model class that only imports ``torch``, ``safetensors``
and ``transformers``, and its config names it in ``auto_map``:

    >>> from transformers import pipeline                              # doctest: +SKIP
    >>> clf = pipeline("text-classification", model="runs/ft/model",
    ...                trust_remote_code=True)                         # doctest: +SKIP

``trust_remote_code=True`` runs that file (read it first: it is written by
:func:`write_hf_classifier_files` and is the same for every folder up to the backbone
class it imports). The project's own loader (``modularevo.models.load.load_model``) never
runs it: it reads the backbone, the head file and ``classifier.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODELING_FILE = "modeling_modularevo_classifier.py"
CLASS_NAME = "ModularEvoForSequenceClassification"

_TEMPLATE = '''"""A modularevo classifier: {backbone} + {pooling} pooling + dropout + Linear head.

Written by modularevo (models/hf_export.py). It imports only torch, safetensors and
transformers. Load with:
    AutoModelForSequenceClassification.from_pretrained(FOLDER, trust_remote_code=True)
"""

import inspect
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import {backbone} as _Backbone
from transformers import {config_class} as _Config
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

HEAD_FILE = "classifier_head.safetensors"


def _pool(hidden, mask, pooling):
    if pooling == "mean":
        m = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask.long() * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return hidden[:, 0]


class {class_name}(PreTrainedModel):
    config_class = _Config
    base_model_prefix = "backbone"

    def __init__(self, config):
        super().__init__(config)
        self.backbone = _Backbone(config)
        self.pooling = config.modularevo_pooling
        self.dropout = nn.Dropout(config.modularevo_dropout)
        hidden = int(config.get_text_config().hidden_size)
        self.classifier = nn.Linear(hidden, config.num_labels)
        params = inspect.signature(self.backbone.forward).parameters
        self._takes_positions = self.pooling == "last" and "position_ids" in params
        self.post_init()

    def _init_weights(self, module):
        pass  # every weight comes from the folder

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        head = os.path.join(str(pretrained_model_name_or_path), HEAD_FILE)
        model.classifier.load_state_dict(load_file(head))
        return model.eval()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        accepted = inspect.signature(self.backbone.forward).parameters
        kwargs = {{k: v for k, v in kwargs.items() if k in accepted and k != "return_dict"}}
        if self._takes_positions and "position_ids" not in kwargs:
            kwargs["position_ids"] = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        pooled = _pool(out.last_hidden_state, attention_mask, self.pooling)
        logits = self.classifier(self.dropout(pooled))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
'''


def modeling_source(backbone: Any, pooling: str) -> str:
    """The model file for a classifier on ``backbone`` (an HF base model instance)."""
    return _TEMPLATE.format(
        backbone=type(backbone).__name__,
        config_class=type(backbone.config).__name__,
        pooling=pooling,
        class_name=CLASS_NAME,
    )


def write_hf_classifier_files(
    out: str | Path,
    backbone: Any,
    *,
    pooling: str,
    dropout: float,
    label_names: list[str],
) -> None:
    """Make the saved folder ``out`` loadable by plain ``transformers`` (see the module doc).

    Adds to its ``config.json``: ``auto_map`` for ``AutoModelForSequenceClassification``,
    ``id2label``/``label2id``, ``num_labels`` and the pooling, and writes
    :data:`MODELING_FILE` beside it.
    """
    out = Path(out)
    (out / MODELING_FILE).write_text(modeling_source(backbone, pooling), encoding="utf-8")
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["auto_map"] = {"AutoModelForSequenceClassification": f"{MODELING_FILE[:-3]}.{CLASS_NAME}"}
    cfg["id2label"] = {str(i): name for i, name in enumerate(label_names)}
    cfg["label2id"] = {name: i for i, name in enumerate(label_names)}
    cfg["modularevo_pooling"] = pooling
    cfg["modularevo_dropout"] = dropout
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
