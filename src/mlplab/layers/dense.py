"""Dense: h @ W + b per member, W [K, in, out], b [K, 1, out]; bf16 matrix products when the group
asks for them (fp32 results)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import RunConfig
from .base import Layer, Spec
from .init import INITIALIZERS


class Dense(Layer):
    kind = "dense"
    params = ("w", "b")

    def __init__(self, spec, group, cfgs, device):
        super().__init__(spec, group, cfgs, device)
        self.low = torch.bfloat16 if group.precision == "bf16" else None
        # the first layer's input is data: its gradient is never needed
        self.input_grad = spec.opts.get("input_grad", True)

    def init_member(self, cfg: RunConfig, g: torch.Generator) -> dict[str, torch.Tensor]:
        fi, fo = self.spec.n_in, self.spec.width
        name, std = cfg.layer_inits()[self.spec.index]
        return {"w": INITIALIZERS[name](fi, fo, std)((fi, fo), g), "b": torch.zeros(1, fo)}

    def forward(self, h, tape=None):
        if tape is not None:
            tape.append((self, h))
        if self.low is None:
            return torch.baddbmm(self.b, h, self.w)
        return torch.baddbmm(self.b.to(self.low), h.to(self.low), self.w.to(self.low)).float()

    def backward(self, g, grads, h):
        gw, gb = grads
        self._bmm(h.transpose(1, 2), g, out=gw)
        torch.sum(g, 1, keepdim=True, out=gb)
        return self._bmm(g, self.w.transpose(1, 2)) if self.input_grad else None

    def _bmm(self, a, b, out=None):
        if self.low is None:
            return torch.bmm(a, b, out=out)
        r = torch.bmm(a.to(self.low), b.to(self.low))
        return r.float() if out is None else out.copy_(r)

    def export(self, k):
        lin = nn.Linear(self.spec.n_in, self.spec.width, dtype=self.w.dtype, device=self.w.device)
        with torch.no_grad():
            lin.weight.copy_(self.w[k].T)
            lin.bias.copy_(self.b[k, 0])
        return [lin]

    @classmethod
    def summary(cls, spec: Spec, cfg, name):
        init, std = cfg.layer_inits()[spec.index]
        return [(f"{name('dense')} (Dense)", f"(None, {spec.width})",
                 spec.n_in * spec.width + spec.width, 0,
                 init if std is None else f"{init}(stddev={std:g})")]
