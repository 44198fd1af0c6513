"""Residual: h + block(h), an identity skip around one hidden block whose input and output widths
match (Dense -> norm/activation -> dropout inside). The block's layers are ordinary layers; the
skip writes two tape entries around them: at `join` the gradient goes into the block unchanged
(and is kept), at `skip` the kept gradient is added to what came back through the block."""

from __future__ import annotations

import torch
from torch import nn

from .base import Layer, Spec


class Residual(Layer):
    kind = "residual"

    def __init__(self, spec, group, cfgs, device):
        super().__init__(spec, group, cfgs, device)
        from . import LAYERS  # the block's layers come from the same registry

        self.block = nn.ModuleList(LAYERS[s.kind](s, group, cfgs, device) for s in spec.inner)

    def leaves(self):
        return [leaf for layer in self.block for leaf in layer.leaves()]

    def forward(self, h, tape=None):
        kept: list[torch.Tensor] = []  # the gradient of the sum, for the skip
        if tape is not None:
            tape.append((self, "skip", kept))
        y = h
        for layer in self.block:
            y = layer(y, tape)
        if tape is not None:
            tape.append((self, "join", kept))
        return h + y

    def backward(self, g, grads, where, kept):
        if where == "join":
            kept.append(g)
            return g
        return g + kept.pop()

    def export(self, k):
        return [ResidualBlock(nn.Sequential(*(m for layer in self.block for m in layer.export(k))))]

    @classmethod
    def example(cls, width):
        inner = (Spec("dense", 1, width, n_in=width), Spec("activation", 1, width, opts={"name": "tanh"}),
                 Spec("layer", 1, width))
        return Spec(cls.kind, 1, width, inner=inner)

    @classmethod
    def summary(cls, spec, cfg, name):
        from . import LAYERS

        rows = [r for s in spec.inner for r in LAYERS[s.kind].summary(s, cfg, name)]
        return rows + [(f"{name('add')} (Add: skip)", f"(None, {spec.width})", 0, 0, "")]


class ResidualBlock(nn.Module):
    """x + block(x), as an exported member has it (scriptable, ONNX-exportable)."""

    def __init__(self, block: nn.Sequential):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)
