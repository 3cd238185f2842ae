"""A causal LM under the classifier templates' names, so generation tasks merge with the rest.

An evolution run keeps one backbone shared by every task (``backbone.*``, the names of
:class:`~modularevo.models.heads.SequenceClassifier`) plus each task's own head. A
generation task's model is the causal LM itself; :class:`LMTemplate` shows it under the
same names: its base model (``transformer``, ``model``, ...) as ``backbone`` and, when the
LM head is not tied to the input embeddings, the head as ``lm_head`` (a per-task head,
never merged, like ``classifier``). A tied head is the embedding matrix, which is shared
and merged with the backbone, so it is not listed twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn


class LMTemplate(nn.Module):
    """``lm`` seen as ``backbone.*`` (+ ``lm_head.*`` when untied); calls go to ``lm``.

    Args:
        lm: a Hugging Face causal LM (``...ForCausalLM``).
    """

    lm: Any  # the wrapped causal LM; not a registered submodule (its tensors are listed once)

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        prefix = str(getattr(lm, "base_model_prefix", ""))
        self.backbone = lm.get_submodule(prefix)
        head = lm.get_output_embeddings()  # pyright: ignore[reportCallIssue]
        embed = lm.get_input_embeddings()  # pyright: ignore[reportCallIssue]
        if head is not None and head.weight is not embed.weight:
            self.lm_head = head
        self.config = lm.config
        object.__setattr__(self, "lm", lm)  # not a submodule: its tensors are listed above

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        labels: Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """The causal LM's forward (``.logits``; ``.loss`` on the non-``-100`` labels)."""
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)

    def generate(self, **kwargs: Any) -> Tensor:
        """The causal LM's ``generate``."""
        return self.lm.generate(**kwargs)  # pyright: ignore[reportCallIssue]

    def train(self, mode: bool = True) -> LMTemplate:
        """Set the mode of the wrapped LM too."""
        super().train(mode)
        self.lm.train(mode)
        return self

    def save_pretrained(self, out: str | Path, **kwargs: Any) -> None:
        """Save the causal LM as a Hugging Face folder (loadable as kind ``causal_lm``)."""
        self.lm.save_pretrained(out, **kwargs)  # pyright: ignore[reportCallIssue]
