"""Small VGG- and ResNet-style CNNs with MwT channel gates, registered in :data:`CNN_MODELS`.

As in MwT (https://arxiv.org/abs/2306.09376) the first conv of each network is ungated and every
other conv is a :class:`~modularevo.mwt.layers.GatedConv`. ``forward`` returns the logits and the
list of per-sample gates of the gated convs, in the order of :func:`gated_layers`.
``shrink`` builds the physically smaller network of a module (kept kernels + kept classes).

Example:
    >>> model = build_model("test_vgg", num_classes=10)
    >>> logits, gates = model(torch.randn(2, 1, 8, 8))
    >>> logits.shape, len(gates) == len(gated_layers(model))
    (torch.Size([2, 10]), True)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modularevo.mwt.layers import GatedConv, slice_gated
from modularevo.registry import Registry

POOL = "M"  # marks a 2x2 max-pool in a VGG width list


def _restrict_head(head: nn.Linear, cols: Tensor | None, classes: Sequence[int]) -> nn.Linear:
    """A copy of ``head`` reading only ``cols`` of its input and producing only ``classes``."""
    rows = torch.tensor(list(classes), dtype=torch.long, device=head.weight.device)
    weight = head.weight.detach().index_select(0, rows)
    if cols is not None:
        weight = weight.index_select(1, cols.to(weight.device))
    new = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.device)
    with torch.no_grad():
        new.weight.copy_(weight)
        new.bias.copy_(head.bias.detach().index_select(0, rows))
    return new


def _check_classes(classes: Sequence[int], num_classes: int) -> None:
    bad = [c for c in classes if not 0 <= c < num_classes]
    if not classes or bad or len(set(classes)) != len(classes):
        raise ValueError(
            f"classes must be distinct ids in [0, {num_classes}), got {list(classes)}; "
            "pick at least one class the model was trained on"
        )


class MaskedVGG(nn.Module):
    """VGG-style CNN: [GatedConv → ReLU | max-pool]* → global average pool → Linear.

    Args:
        widths: output channels of each conv, with ``"M"`` for a 2x2 max-pool.
        num_classes: number of output logits.
        in_channels: image channels (1 for MNIST-like sets).
    """

    def __init__(
        self, widths: Sequence[int | str], *, num_classes: int, in_channels: int = 1
    ) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.num_classes = num_classes
        self.features = nn.ModuleList()
        c_in, first = in_channels, True
        for w in self.widths:
            if w == POOL:
                self.features.append(nn.MaxPool2d(2))
                continue
            self.features.append(GatedConv(c_in, int(w), gated=not first))
            c_in, first = int(w), False
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits ``(B, num_classes)`` and the gates ``(B, C_l)`` of every gated conv."""
        gates: list[Tensor] = []
        for layer in self.features:
            if isinstance(layer, GatedConv):
                x, gate = layer(x)
                x = F.relu(x)
                if gate is not None:
                    gates.append(gate)
            else:
                x = layer(x)
        return self.head(x.mean(dim=(2, 3))), gates

    def shrink(
        self, keep: Mapping[str, Tensor], classes: Sequence[int], *, keep_gates: bool = True
    ) -> MaskedVGG:
        """The module of ``keep`` (gated-layer name → kept kernel ids) for ``classes``.

        Each gated conv keeps its listed kernels and reads only the kernels the previous conv
        kept; the head reads the last conv's kept kernels and yields the logits of ``classes``
        in that order. This model is not modified.

        Raises:
            ValueError: if a gated layer has no entry in ``keep`` or ``classes`` is invalid.
        """
        _check_keep(self, keep)
        _check_classes(classes, self.num_classes)
        new = copy.deepcopy(self)
        prev: Tensor | None = None
        for i, layer in enumerate(self.features):
            if not isinstance(layer, GatedConv):
                continue
            out = keep.get(f"features.{i}")
            new.features[i] = slice_gated(layer, in_index=prev, out_index=out, keep_gate=keep_gates)
            prev = out
        new.head = _restrict_head(self.head, prev, classes)
        new.num_classes = len(classes)
        return new


class GatedBlock(nn.Module):
    """ResNet BasicBlock with gated convs: ReLU(conv2(ReLU(conv1(x))) + shortcut(x)).

    Args:
        c_in: input channels.
        c_out: output channels.
        stride: stride of ``conv1`` and of the 1x1 downsample conv (used when shapes change).
    """

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = GatedConv(c_in, c_out, stride=stride)
        self.conv2 = GatedConv(c_out, c_out)
        self.down = (
            GatedConv(c_in, c_out, kernel_size=1, stride=stride)
            if stride != 1 or c_in != c_out
            else None
        )

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Block output and the gates of conv1, conv2 and (if any) the downsample conv."""
        h, g1 = self.conv1(x)
        h, g2 = self.conv2(F.relu(h))
        gates = [g1, g2]
        shortcut = x
        if self.down is not None:
            shortcut, gd = self.down(x)
            gates.append(gd)
        return F.relu(h + shortcut), [g for g in gates if g is not None]


class MaskedResNet(nn.Module):
    """ResNet-style CNN: ungated stem conv → gated BasicBlocks → global average pool → Linear.

    Args:
        stem: channels of the stem conv (3x3, stride 1, no max-pool: the CIFAR stem of MwT).
        stages: ``(channels, stride)`` of each stage; each stage is one or more blocks.
        num_classes: number of output logits.
        in_channels: image channels.
        blocks_per_stage: BasicBlocks in each stage.
    """

    def __init__(
        self,
        stem: int,
        stages: Sequence[tuple[int, int]],
        *,
        num_classes: int,
        in_channels: int = 1,
        blocks_per_stage: int = 1,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = GatedConv(in_channels, stem, gated=False)
        self.blocks = nn.ModuleList()
        c_in = stem
        for width, stride in stages:
            for b in range(blocks_per_stage):
                self.blocks.append(GatedBlock(c_in, width, stride=stride if b == 0 else 1))
                c_in = width
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits ``(B, num_classes)`` and the gates of every gated conv, block by block."""
        x = F.relu(self.stem(x)[0])
        gates: list[Tensor] = []
        for block in self.blocks:
            assert isinstance(block, GatedBlock)
            x, block_gates = block(x)
            gates.extend(block_gates)
        return self.head(x.mean(dim=(2, 3))), gates

    def shrink(
        self, keep: Mapping[str, Tensor], classes: Sequence[int], *, keep_gates: bool = True
    ) -> MaskedResNet:
        """The module of ``keep`` for ``classes`` (see :meth:`MaskedVGG.shrink`).

        The residual stream keeps its full width: conv2 and the downsample conv compute only
        their kept kernels and write them back at their channel ids (a zero-padded scatter), so
        the residual additions line up. conv1 keeps its kernels and conv2 reads only those.

        Raises:
            ValueError: if a gated layer has no entry in ``keep`` or ``classes`` is invalid.
        """
        _check_keep(self, keep)
        _check_classes(classes, self.num_classes)
        new = copy.deepcopy(self)
        for i, block in enumerate(self.blocks):
            assert isinstance(block, GatedBlock)
            new_block = new.blocks[i]
            assert isinstance(new_block, GatedBlock)
            k1, k2 = keep[f"blocks.{i}.conv1"], keep[f"blocks.{i}.conv2"]
            width = block.conv2.kernels
            cut = partial(slice_gated, keep_gate=keep_gates)
            new_block.conv1 = cut(block.conv1, in_index=None, out_index=k1)
            new_block.conv2 = cut(block.conv2, in_index=k1, out_index=k2, scatter_width=width)
            if block.down is not None:
                kd = keep[f"blocks.{i}.down"]
                new_block.down = cut(block.down, in_index=None, out_index=kd, scatter_width=width)
        new.head = _restrict_head(self.head, None, classes)
        new.num_classes = len(classes)
        return new


MaskedCNN = MaskedVGG | MaskedResNet


def gated_layers(model: nn.Module) -> dict[str, GatedConv]:
    """The gated convs of ``model`` by qualified name, in the order ``forward`` returns gates."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, GatedConv) and m.gate is not None
    }


def _check_keep(model: nn.Module, keep: Mapping[str, Tensor]) -> None:
    missing = [n for n in gated_layers(model) if n not in keep]
    if missing:
        raise ValueError(
            f"keep has no kernel ids for gated layer(s) {missing}; it has {sorted(keep)}. "
            "Compute the keep sets from this model's class masks"
        )


CNN_MODELS: Registry[Callable[..., MaskedCNN]] = Registry("cnn model")
CNN_MODELS.add("vgg_small", partial(MaskedVGG, (32, 32, POOL, 64, 64, POOL, 128, 128)))
CNN_MODELS.add("test_vgg", partial(MaskedVGG, (8, POOL, 16, 16)))
CNN_MODELS.add("resnet_small", partial(MaskedResNet, 16, ((16, 1), (32, 2), (64, 2))))
CNN_MODELS.add("test_resnet", partial(MaskedResNet, 8, ((8, 1), (16, 2))))


def build_model(name: str, *, num_classes: int, in_channels: int = 1) -> MaskedCNN:
    """Build a registered CNN with freshly initialised weights.

    Args:
        name: a key of :data:`CNN_MODELS` (``vgg_small``, ``resnet_small``, ``test_vgg`` ...).
        num_classes: number of classes of the task.
        in_channels: image channels.

    Raises:
        UnknownNameError: for an unregistered name, with close names.
    """
    return CNN_MODELS.get(name)(num_classes=num_classes, in_channels=in_channels)
