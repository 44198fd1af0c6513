"""Activations: the function, its gradient through torch's own backward kernel (so the numbers
are autograd's), and the torch.nn module of an exported member. Add one with a line in
ACTIVATIONS and its name in config.ACTIVATION_NAMES."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Layer, Spec

aten = torch.ops.aten
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805  # torch's (and Keras') constants


@dataclass(frozen=True)
class Fn:
    """fn(x); grad(g, x, y) -> d input; module() for export."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    grad: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    module: Callable[[], nn.Module]


ACTIVATIONS: dict[str, Fn] = {
    "relu": Fn(F.relu, lambda g, x, y: aten.threshold_backward(g, y, 0), nn.ReLU),
    "sigmoid": Fn(torch.sigmoid, lambda g, x, y: aten.sigmoid_backward(g, y), nn.Sigmoid),
    "tanh": Fn(torch.tanh, lambda g, x, y: aten.tanh_backward(g, y), nn.Tanh),
    "gelu": Fn(F.gelu, lambda g, x, y: aten.gelu_backward(g, x), nn.GELU),
    "elu": Fn(F.elu, lambda g, x, y: aten.elu_backward(g, 1.0, 1, 1, False, x), nn.ELU),
    "selu": Fn(F.selu, lambda g, x, y: aten.elu_backward(g, SELU_ALPHA, SELU_SCALE, 1, False, x),
               nn.SELU),
    "leaky_relu": Fn(F.leaky_relu, lambda g, x, y: aten.leaky_relu_backward(g, x, 0.01, False),
                     nn.LeakyReLU),
    "silu": Fn(F.silu, lambda g, x, y: aten.silu_backward(g, x), nn.SiLU),
    "linear": Fn(lambda x: x, lambda g, x, y: g, nn.Identity),
}


class Activation(Layer):
    kind = "activation"

    def __init__(self, spec, group, cfgs, device):
        super().__init__(spec, group, cfgs, device)
        self.name = spec.opts["name"]
        self.fn = ACTIVATIONS[self.name]

    def forward(self, h, tape=None):
        y = self.fn.fn(h)
        if tape is not None:
            tape.append((self, h, y))
        return y

    def backward(self, g, grads, x, y):
        return self.fn.grad(g, x, y)

    def export(self, k):
        return [self.fn.module()]

    @classmethod
    def example(cls, width):
        return Spec(cls.kind, 1, width, opts={"name": "tanh"})  # every name: tests/test_model.py

    @classmethod
    def summary(cls, spec, cfg, name):
        return [(f"{name('activation')} (Activation: {spec.opts['name']})", f"(None, {spec.width})",
                 0, 0, "")]
