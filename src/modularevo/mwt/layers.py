"""Gated convolutions of MwT (Modularizing while Training, https://arxiv.org/abs/2306.09376).

A :class:`GatedConv` is conv → BatchNorm → ⊙ gate, where the gate is a per-sample, per-kernel
(output channel) value in ``[0, 1)`` produced by a small :class:`MaskGenerator` from the layer's
*input*. A gate of exactly 0 switches a kernel off for that sample; MwT's losses push samples of
one class to use the same kernels and samples of different classes to use different ones.

:func:`slice_gated` cuts a layer down to some input and output channels; it is how a per-class
module becomes a physically smaller network.

Example:
    >>> layer = GatedConv(4, 8)
    >>> y, gate = layer(torch.randn(2, 4, 6, 6))
    >>> y.shape, gate.shape
    (torch.Size([2, 8, 6, 6]), torch.Size([2, 8]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskGenerator(nn.Module):
    """Per-sample channel gates from the global average of a layer's input (MwT §3).

    ``gate = ReLU(tanh(W2 · ReLU(W1 · GAP(x)) + b2))``, ``W1`` without bias. ``b2`` starts at 1 so
    that almost every kernel starts switched on (tanh(1) ≈ 0.76).

    Args:
        c_in: input channels of the gated conv.
        c_out: output channels (kernels) of the gated conv.
        hidden: width of the hidden layer; default ``c_out`` below 128, else ``c_out // 2``.
    """

    def __init__(self, c_in: int, c_out: int, *, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or (c_out if c_out < 128 else c_out // 2)
        self.fc1 = nn.Linear(c_in, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, c_out)
        nn.init.kaiming_normal_(self.fc1.weight)
        nn.init.kaiming_normal_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        """Gates ``(batch, c_out)`` in ``[0, 1)`` for an input ``(batch, c_in, H, W)``."""
        pooled = x.mean(dim=(2, 3))  # (B, c_in)
        return F.relu(torch.tanh(self.fc2(F.relu(self.fc1(pooled)))))


class GatedConv(nn.Module):
    """Conv (no bias) → BatchNorm → optional per-sample channel gate → optional scatter.

    The output is *not* passed through a ReLU; the caller applies it (a ResNet block adds the
    shortcut first). When ``scatter_index`` is set (a sliced layer inside a residual stage), the
    kept channels are written into a zero tensor of ``scatter_width`` channels so that they line
    up with the residual stream.

    Args:
        c_in: input channels.
        c_out: output channels (kernels).
        kernel_size: square kernel size; padding keeps the spatial size at stride 1.
        stride: convolution stride.
        gated: attach a :class:`MaskGenerator` (MwT leaves the first conv of a network ungated).
        gate_hidden: hidden width of the generator (kept when a layer is sliced).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        gated: bool = True,
        gate_hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.gate = MaskGenerator(c_in, c_out, hidden=gate_hidden) if gated else None
        self.scatter_width: int | None = None
        self.scatter_index: Tensor | None
        self.register_buffer("scatter_index", None)

    @property
    def kernels(self) -> int:
        """Number of output channels (kernels) this layer computes."""
        return self.conv.out_channels

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Return the gated output ``(B, c_out, H', W')`` and the gates ``(B, c_out)`` (or None)."""
        y = self.bn(self.conv(x))
        gate = self.gate(x) if self.gate is not None else None
        if gate is not None:
            y = y * gate[:, :, None, None]
        if self.scatter_index is not None and self.scatter_width is not None:
            full = y.new_zeros(y.shape[0], self.scatter_width, *y.shape[2:])
            y = full.index_copy(1, self.scatter_index, y)
        return y, gate


def _pick(t: Tensor, dim: int, index: Tensor | None) -> Tensor:
    return t if index is None else t.index_select(dim, index.to(t.device))


@torch.no_grad()
def _copy_sliced(
    src: GatedConv, dst: GatedConv, *, in_index: Tensor | None, out_index: Tensor | None
) -> None:
    dst.conv.weight.copy_(_pick(_pick(src.conv.weight, 0, out_index), 1, in_index))
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst.bn, name).copy_(_pick(getattr(src.bn, name), 0, out_index))
    if dst.bn.num_batches_tracked is not None and src.bn.num_batches_tracked is not None:
        dst.bn.num_batches_tracked.copy_(src.bn.num_batches_tracked)
    if dst.gate is not None and src.gate is not None:
        dst.gate.fc1.weight.copy_(_pick(src.gate.fc1.weight, 1, in_index))
        dst.gate.fc2.weight.copy_(_pick(src.gate.fc2.weight, 0, out_index))
        dst.gate.fc2.bias.copy_(_pick(src.gate.fc2.bias, 0, out_index))


def slice_gated(
    layer: GatedConv,
    *,
    in_index: Tensor | None,
    out_index: Tensor | None,
    keep_gate: bool = True,
    scatter_width: int | None = None,
) -> GatedConv:
    """A new, smaller copy of ``layer`` restricted to some input and output channels.

    Args:
        layer: the layer to cut; it is not modified.
        in_index: input channels to keep (long, sorted); None keeps all.
        out_index: output channels (kernels) to keep (long, sorted); None keeps all.
        keep_gate: keep the (sliced) mask generator, so the module computes the same gated
            function as the modular model; False drops it as the MwT reference does.
        scatter_width: if given, write the kept channels back at ``out_index`` into this many
            channels (residual stages).

    Returns:
        A :class:`GatedConv` in the same train/eval mode with copied, sliced tensors.

    Raises:
        ValueError: if an index is empty or out of range.
    """
    for name, idx, size in (("in", in_index, layer.conv.in_channels), ("out", out_index,
                            layer.kernels)):  # fmt: skip
        if idx is not None and (idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= size):
            raise ValueError(
                f"{name}_index must hold 1..{size} channel ids in [0, {size}), got "
                f"{idx.tolist()}; every kept layer needs at least one channel"
            )
    c_in = layer.conv.in_channels if in_index is None else in_index.numel()
    c_out = layer.kernels if out_index is None else out_index.numel()
    k, s = layer.conv.kernel_size[0], layer.conv.stride[0]
    gated = keep_gate and layer.gate is not None
    hidden = layer.gate.fc1.out_features if layer.gate is not None else None
    new = GatedConv(c_in, c_out, kernel_size=k, stride=s, gated=gated, gate_hidden=hidden)
    _copy_sliced(layer, new, in_index=in_index, out_index=out_index)
    if scatter_width is not None:
        index = torch.arange(scatter_width) if out_index is None else out_index.clone()
        new.scatter_width = scatter_width
        new.scatter_index = index.long()
    new.train(layer.training)
    return new.to(layer.conv.weight.device)
