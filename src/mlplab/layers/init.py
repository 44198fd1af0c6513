"""Initializers by their Keras names: (fan_in, fan_out, stddev) -> sampler(shape, generator).
Drawn on the CPU from each member's own generator, so a member gets the same weights alone or in
a group."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

_TRUNC = 0.87962566103423978  # stddev of a unit normal truncated at +-2: Keras divides by it


def _normal(std: float, truncated: bool):
    def init(shape, g):
        w = torch.empty(shape)
        if truncated:
            s = std / _TRUNC
            return nn.init.trunc_normal_(w, 0.0, s, -2 * s, 2 * s, generator=g)
        return w.normal_(0.0, std, generator=g)
    return init


def _uniform(limit: float):
    return lambda shape, g: torch.empty(shape).uniform_(-limit, limit, generator=g)


INITIALIZERS: dict[str, Callable[[int, int, float], Callable]] = {
    "random_normal": lambda fi, fo, sd: _normal(sd, truncated=False),
    "random_uniform": lambda fi, fo, sd: _uniform(sd),
    "glorot_uniform": lambda fi, fo, sd: _uniform(math.sqrt(6 / (fi + fo))),
    "glorot_normal": lambda fi, fo, sd: _normal(math.sqrt(2 / (fi + fo)), truncated=True),
    "he_normal": lambda fi, fo, sd: _normal(math.sqrt(2 / fi), truncated=True),
    "he_uniform": lambda fi, fo, sd: _uniform(math.sqrt(6 / fi)),
    "lecun_normal": lambda fi, fo, sd: _normal(math.sqrt(1 / fi), truncated=True),
    "lecun_uniform": lambda fi, fo, sd: _uniform(math.sqrt(3 / fi)),
}
