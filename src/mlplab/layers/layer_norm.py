"""LayerNorm per member and sample over the features (Keras' LayerNormalization: epsilon from the
config, 1e-3 by default; gamma and beta per feature, 2*H trainable parameters). No running
statistics: training and evaluation compute the same thing."""

from __future__ import annotations

import torch
from torch import nn

from .base import Layer


class LayerNorm(Layer):
    kind = "layer"
    params = ("gamma", "beta")

    def __init__(self, spec, group, cfgs, device):
        super().__init__(spec, group, cfgs, device)
        self.eps = group.bn_epsilon

    def stored(self, attr):
        return f"ln_{attr}{self.spec.index}"  # never confused with a BatchNorm's gamma/beta

    def init_member(self, cfg, g):
        h = self.spec.width
        return {"gamma": torch.ones(1, h), "beta": torch.zeros(1, h)}

    def forward(self, h, tape=None):
        mean = h.mean(-1, keepdim=True)
        rstd = torch.rsqrt(h.var(-1, unbiased=False, keepdim=True) + self.eps)
        x_hat = (h - mean) * rstd
        if tape is not None:
            tape.append((self, x_hat, rstd))
        return torch.addcmul(self.beta, x_hat, self.gamma)

    def backward(self, g, grads, x_hat, rstd):
        torch.sum(g * x_hat, 1, keepdim=True, out=grads[0])
        torch.sum(g, 1, keepdim=True, out=grads[1])
        d = g * self.gamma  # d loss / d x_hat
        return rstd * (d - d.mean(-1, keepdim=True) - x_hat * (d * x_hat).mean(-1, keepdim=True))

    def export(self, k):
        ln = nn.LayerNorm(self.spec.width, eps=self.eps, dtype=self.gamma.dtype,
                          device=self.gamma.device)
        return [self.member_into(ln, k, {"weight": "gamma", "bias": "beta"})]

    @classmethod
    def summary(cls, spec, cfg, name):
        return [(f"{name('layer_normalization')} (LayerNormalization)", f"(None, {spec.width})",
                 2 * spec.width, 0, "")]
