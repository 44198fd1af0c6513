"""Input standardisation: (x - mean) / std with the training split's pixel statistics in x/255
units (set when training starts, kept with the weights and exported)."""

from __future__ import annotations

import torch
from torch import nn

from .base import Layer


class Standardize(Layer):
    kind = "standardize"
    state = ("in_mean", "in_std")

    def stored(self, attr):
        return attr

    def init_member(self, cfg, g):
        return {"in_mean": torch.zeros(1, 1), "in_std": torch.ones(1, 1)}

    def forward(self, h, tape=None):
        if tape is not None:
            tape.append((self,))
        return (h - self.in_mean) / self.in_std

    def backward(self, g, grads):
        return None  # its input is data

    def export(self, k):
        return [StandardizeModule(float(self.in_mean[k]), float(self.in_std[k]))]


class StandardizeModule(nn.Module):
    """(x - mean) / std with the training split's pixel statistics (exported with the model)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
