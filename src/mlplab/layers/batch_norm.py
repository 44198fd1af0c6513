"""BatchNorm per member over the batch axis, h [K, B, H], as ONE native batch_norm over K*H
features: [K, B, H] -> [B, K*H] puts each member's features in their own columns, so statistics
never mix members (for K = 1 a free view). Keras' conventions: momentum m keeps m of the old
statistic (torch's momentum is 1 - m); the moving variance is the unbiased batch variance (as
torch; measured to move final accuracy by <= 0.0006 against Keras' biased one)."""

from __future__ import annotations

import torch
from torch import nn

from .. import kernels
from .base import Layer


class BatchNorm(Layer):
    kind = "batch"
    params = ("gamma", "beta")
    state = ("mean", "var")

    def __init__(self, spec, group, cfgs, device):
        super().__init__(spec, group, cfgs, device)
        self.momentum, self.eps = 1 - group.bn_momentum, group.bn_epsilon  # torch's momentum

    def init_member(self, cfg, g):
        h = self.spec.width
        return {"gamma": torch.ones(1, h), "beta": torch.zeros(1, h), "mean": torch.zeros(1, h),
                "var": torch.ones(1, h)}

    def _flat(self):
        return (self.gamma.view(-1), self.beta.view(-1), self.mean.view(-1), self.var.view(-1))

    def forward(self, h, tape=None):
        k, b, width = h.shape
        flat = h.transpose(0, 1).reshape(b, k * width)
        out, mean, invstd = torch.native_batch_norm(flat, *self._flat(), self.training,
                                                    self.momentum, self.eps)
        if tape is not None:
            tape.append((self, flat, mean, invstd))
        return out.view(b, k, width).transpose(0, 1)

    def backward(self, g, grads, flat, mean, invstd):
        k, b, width = g.shape
        g_in, g_gamma, g_beta = kernels.batch_norm_backward(
            g.transpose(0, 1).reshape(b, k * width), flat, self.gamma.view(-1), mean, invstd, self.eps)
        grads[0].view(-1).copy_(g_gamma)
        grads[1].view(-1).copy_(g_beta)
        return g_in.view(b, k, width).transpose(0, 1)

    def export(self, k):
        bn = nn.BatchNorm1d(self.spec.width, eps=self.eps, momentum=self.momentum,
                            dtype=self.gamma.dtype, device=self.gamma.device)
        return [self.member_into(bn, k, {"weight": "gamma", "bias": "beta", "running_mean": "mean",
                                         "running_var": "var"})]

    @classmethod
    def summary(cls, spec, cfg, name):
        # Keras counts the moving mean and variance as non-trainable parameters
        return [(f"{name('batch_normalization')} (BatchNormalization)", f"(None, {spec.width})",
                 4 * spec.width, 2 * spec.width, "")]
