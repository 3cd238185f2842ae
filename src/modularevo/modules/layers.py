"""Masking mechanics: learnable scores per weight, a binary mask with a straight-through gradient.

A module is learned as real-valued *scores* ``S`` next to a frozen pretrained model.
The forward pass uses ``W ⊙ 1[S > 0]``; the backward pass treats the step function as
the identity and clips the gradient to [-1, 1] (the straight-through estimator of
ModularEvo, METHODS.md §1.1). Nothing in the wrapped model changes: the masked
weights are substituted per call with :func:`torch.func.functional_call`, so the
model keeps its class, its ``state_dict`` keys and ``save_pretrained``. Because the
substitution is elementwise, GPT-2 ``Conv1D`` (weight stored ``(in, out)``) works the
same as ``nn.Linear``.

Example:
    >>> import torch
    >>> lin = torch.nn.Linear(3, 2)
    >>> scores = MaskScores({"weight": (2, 3), "bias": (2,)}, init_range=(0.0, 1.0))
    >>> masked = MaskedModel(lin, scores)
    >>> masked(torch.ones(1, 3)).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.func import functional_call


class _Binarize(torch.autograd.Function):
    """``1[s > 0]`` forward; gradient passed straight through, clipped to [-1, 1]."""

    @staticmethod
    def forward(ctx: Any, scores: Tensor) -> Tensor:
        return (scores > 0).to(scores.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(-1.0, 1.0)


class _MaskedWeight(torch.autograd.Function):
    """``w ⊙ 1[s > 0]`` with the STE gradient ``clip(g ⊙ w)`` to ``s`` and none to ``w``."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, scores: Tensor) -> Tensor:
        ctx.save_for_backward(weight)
        return weight * (scores > 0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        (weight,) = ctx.saved_tensors
        return None, (grad * weight).clamp_(-1.0, 1.0)


class _KeptFraction(torch.autograd.Function):
    """Mean of ``1[s > 0]`` over all entries; STE gradient ``1 / N`` to every score."""

    @staticmethod
    def forward(ctx: Any, *scores: Tensor) -> Tensor:
        total = sum(s.numel() for s in scores)
        ctx.total = total
        ctx.shapes = [s.shape for s in scores]
        kept = sum((s > 0).sum() for s in scores)
        return torch.as_tensor(kept, dtype=scores[0].dtype) / max(total, 1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, ...]:
        g = (grad / max(ctx.total, 1)).clamp(-1.0, 1.0)
        return tuple(g.expand(shape) for shape in ctx.shapes)


def binarize(scores: Tensor) -> Tensor:
    """The binary mask ``1[scores > 0]`` (same dtype), with a straight-through gradient."""
    return _Binarize.apply(scores)  # type: ignore[no-any-return]


def masked_weight(weight: Tensor, scores: Tensor) -> Tensor:
    """``weight ⊙ 1[scores > 0]``; the gradient reaches ``scores`` only (STE, clipped)."""
    return _MaskedWeight.apply(weight, scores)  # type: ignore[no-any-return]


def kept_fraction(scores: Sequence[Tensor]) -> Tensor:
    """Mean of the binary masks over all entries of ``scores`` (differentiable by STE)."""
    if not scores:
        return torch.zeros(())
    return _KeptFraction.apply(*scores)  # type: ignore[no-any-return]


class MaskParametrization(Protocol):
    """What :class:`MaskedModel` needs from a set of scores (unstructured or structured)."""

    def names(self) -> list[str]:
        """Parameter names the mask covers."""
        ...

    def masked_params(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{name: params[name] ⊙ mask}`` with gradients to the scores."""
        ...

    def hard_masks(self) -> dict[str, Tensor]:
        """``{name: bool mask}`` (detached)."""
        ...

    def kept_fraction(self) -> Tensor:
        """Mean of the mask over all covered entries, differentiable by STE."""
        ...


def _key(name: str) -> str:
    return name.replace(".", "__")


class MaskScores(nn.Module):
    """One real-valued score tensor per masked parameter (weights and biases).

    Args:
        shapes: parameter name -> shape of the parameter.
        init_range: scores start uniform in ``[low, high)``; with ``low >= 0`` every
            weight starts kept (the paper uses ``(0, 1)``).
        generator: randomness for the init (seeded by the caller).
    """

    def __init__(
        self,
        shapes: Mapping[str, Sequence[int] | torch.Size],
        *,
        init_range: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        low, high = init_range
        self._names = list(shapes)
        self.scores = nn.ParameterDict()
        for name, shape in shapes.items():
            s = torch.rand(tuple(shape), generator=generator) * (high - low) + low
            self.scores[_key(name)] = nn.Parameter(s)

    def names(self) -> list[str]:
        """Parameter names the scores cover, in insertion order."""
        return list(self._names)

    def score(self, name: str) -> Tensor:
        """The score tensor of parameter ``name``."""
        return self.scores[_key(name)]

    def masked_params(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Masked copies of ``params`` for :func:`torch.func.functional_call`."""
        return {n: masked_weight(params[n], self.score(n)) for n in self._names}

    def hard_masks(self) -> dict[str, Tensor]:
        """``{name: bool mask}``, detached and on CPU."""
        return {n: (self.score(n).detach() > 0).cpu() for n in self._names}

    def kept_fraction(self) -> Tensor:
        """Kept fraction over all entries (weights and biases), with an STE gradient."""
        return kept_fraction([self.score(n) for n in self._names])


class MaskedModel(nn.Module):
    """A frozen model whose masked parameters are replaced by ``param ⊙ mask`` per call.

    All parameters of ``model`` are frozen except ``trainable`` (e.g. a fresh LM head
    that trains together with the masks). The wrapped model is not modified otherwise.

    Args:
        model: the pretrained model.
        scores: a :class:`MaskParametrization` (e.g. :class:`MaskScores`).
        trainable: names of model parameters that stay trainable.
    """

    def __init__(self, model: nn.Module, scores: nn.Module, trainable: Iterable[str] = ()) -> None:
        super().__init__()
        self.model = model
        self.masks = scores
        keep = set(trainable)
        for name, p in model.named_parameters():
            p.requires_grad_(name in keep)
        params = dict(model.named_parameters())
        missing = [n for n in self._scores().names() if n not in params]
        if missing:
            raise KeyError(f"scores cover parameters the model lacks, e.g. {missing[0]!r}")

    def _scores(self) -> MaskParametrization:
        return self.masks  # type: ignore[return-value]

    def forward(self, *args: Any, sparse_head: str | None = None, **kwargs: Any) -> Any:
        """Call the wrapped model with masked parameters.

        Args:
            *args: positional model inputs.
            sparse_head: for masked LMs, the head module name (e.g. ``"cls"``): the body
                runs masked, and the head only on positions with a label, so the
                vocabulary projection is not paid for the ~85% unscored tokens.
                The loss is the same; only ``loss`` is returned.
            **kwargs: keyword model inputs (``labels`` included).
        """
        params = dict(self.model.named_parameters())
        masked = self._scores().masked_params(params)
        if sparse_head is not None and "labels" in kwargs:
            return self._sparse_mlm(masked, sparse_head, args, kwargs)
        return functional_call(self.model, masked, args, kwargs, tie_weights=True, strict=False)

    def _sparse_mlm(
        self, masked: dict[str, Tensor], head: str, args: tuple, kwargs: dict[str, Any]
    ) -> Any:
        prefix = str(getattr(self.model, "base_model_prefix", ""))
        body = getattr(self.model, prefix)
        own = {n[len(prefix) + 1 :]: t for n, t in masked.items() if n.startswith(prefix + ".")}
        labels = kwargs.pop("labels")
        hidden = functional_call(body, own, args, kwargs, strict=False)[0]  # (B, T, H)
        scored = labels != -100
        logits = self.model.get_submodule(head)(hidden[scored])  # (n_scored, vocab)
        loss = nn.functional.cross_entropy(logits.float(), labels[scored])
        return SimpleNamespace(loss=loss)


def tied_parameter_names(model: nn.Module) -> set[str]:
    """Names (all aliases) of parameters whose storage is shared by more than one name."""
    by_ptr: dict[tuple[int, int], list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_ptr.setdefault((p.data_ptr(), p.numel()), []).append(name)
    return {n for names in by_ptr.values() if len(names) > 1 for n in names}


def maskable_params(model: nn.Module, layers: Iterable[str], *, bias: bool = True) -> list[str]:
    """Parameter names of the ``layers`` (Linear/Conv1D module names) that a mask covers.

    Tied parameters are left out: masking a weight shared with the input embeddings
    (GPT-Neo's ``lm_head``) would silently zero the embeddings when the module is
    materialised (METHODS.md §6, pitfall 5).

    Args:
        model: the model.
        layers: module names of the maskable layers (``ArchInfo.maskable``).
        bias: cover the layers' biases as well.
    """
    tied = tied_parameter_names(model)
    modules = dict(model.named_modules())
    out: list[str] = []
    for layer in layers:
        mod = modules[layer]
        for attr in ("weight", "bias") if bias else ("weight",):
            p = getattr(mod, attr, None)
            name = f"{layer}.{attr}"
            if isinstance(p, nn.Parameter) and name not in tied:
                out.append(name)
    return out


def masked_state(model: nn.Module, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``{name: param ⊙ mask}`` for a hard mask, ready for ``functional_call``."""
    params = dict(model.named_parameters())
    return {n: params[n].detach() * m.to(params[n].device) for n, m in masks.items()}
