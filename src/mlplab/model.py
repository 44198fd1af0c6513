"""The stacked MLP: K members with identical shapes computed as one model.

Shapes: input [K, B, in]; dense weight [K, in, out]; bias, BatchNorm gamma/beta and running
statistics [K, 1, out]; output logits [K, B, classes]. Every parameter is 3-D with the member
on axis 0, so per-member hyperparameters broadcast as [K, 1, 1] in the optimizers.

A hidden layer is Dense -> [BN if before] -> activation -> [BN if after] -> Dropout, as in the
course notebook (BatchNorm after ReLU, then Dropout). The last layer is Dense only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import RunConfig

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": F.gelu, "elu": F.elu,
    "selu": F.selu, "leaky_relu": F.leaky_relu, "silu": F.silu, "linear": lambda x: x,
}
# torch.nn modules for member(k): the same functions as layers of a plain nn.Sequential.
ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU, "elu": nn.ELU,
    "selu": nn.SELU, "leaky_relu": nn.LeakyReLU, "silu": nn.SiLU, "linear": nn.Identity,
}

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


# Keras initializer names -> (fan_in, fan_out, stddev) -> sampler(shape, generator).
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


def init_member(cfg: RunConfig) -> dict[str, torch.Tensor]:
    """One member's initial parameters, drawn on the CPU from its own seed (so a member gets the
    same weights whether it trains alone or in a group). Shapes without the K axis."""
    g = torch.Generator().manual_seed(cfg.seed)
    widths, stds = cfg.widths, cfg.stddevs()
    out: dict[str, torch.Tensor] = {}
    for i, (fi, fo) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        out[f"w{i}"] = INITIALIZERS[cfg.init_name](fi, fo, stds[i])((fi, fo), g)
        out[f"b{i}"] = torch.zeros(1, fo)
        if cfg.batch_norm and i < len(widths) - 2:
            out[f"gamma{i}"] = torch.ones(1, fo)
            out[f"beta{i}"] = torch.zeros(1, fo)
            out[f"mean{i}"] = torch.zeros(1, fo)
            out[f"var{i}"] = torch.ones(1, fo)
    if cfg.input_norm == "standardize":  # set from the training split when training starts
        out["in_mean"] = torch.zeros(1, 1)
        out["in_std"] = torch.ones(1, 1)
    return out


BUFFER_PREFIXES = ("mean", "var", "in_")


class StackedMLP(nn.Module):
    """K same-shape MLPs as one module. `cfgs` may differ in anything but shapes; dropout rate
    and BN momentum are per member ([K, 1, 1] tensors)."""

    def __init__(self, cfgs: list[RunConfig], device: torch.device | str = "cpu"):
        super().__init__()
        first = cfgs[0]
        self.widths, self.act_name = first.widths, first.activation
        self.batch_norm, self.bn_position = first.batch_norm, first.bn_position
        self.k = len(cfgs)
        members = [init_member(c) for c in cfgs]
        for key in members[0]:
            stacked = torch.stack([m[key] for m in members]).to(device)
            if key.startswith(BUFFER_PREFIXES):
                self.register_buffer(key, stacked)
            else:
                self.register_parameter(key, nn.Parameter(stacked))
        per = lambda f: torch.tensor([f(c) for c in cfgs], device=device).view(-1, 1, 1)  # noqa: E731
        self.register_buffer("p_drop", per(lambda c: c.dropout))
        self.any_dropout = any(c.dropout > 0 for c in cfgs)
        rates = {c.dropout for c in cfgs}
        self.same_dropout = rates.pop() if len(rates) == 1 else None
        # BatchNorm momentum and epsilon are part of the group key: one native call for all.
        # Keras momentum m keeps m of the old statistic; torch's momentum is 1 - m.
        self.bn_torch_momentum, self.bn_eps_value = 1 - first.bn_momentum, first.bn_epsilon
        self.n_layers = len(self.widths) - 1
        self.precision = first.precision
        self.standardize = first.input_norm == "standardize"

    def autocast(self):
        """bf16 autocast for the matmuls when the config asks for it (CPU or CUDA); weights,
        optimizer state and BatchNorm statistics stay fp32."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.w0.device.type, dtype=torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [K, B, in] float -> logits [K, B, classes]."""
        act = ACTIVATIONS[self.act_name]
        h = (x - self.in_mean) / self.in_std if self.standardize else x
        for i in range(self.n_layers):
            h = torch.baddbmm(getattr(self, f"b{i}"), h, getattr(self, f"w{i}"))
            if i == self.n_layers - 1:
                break
            if self.batch_norm and self.bn_position == "before":
                h = self._bn(h, i)
            h = act(h)
            if self.batch_norm and self.bn_position == "after":
                h = self._bn(h, i)
            if self.training and self.any_dropout:
                h = self._dropout(h)
        return h

    def _dropout(self, h: torch.Tensor) -> torch.Tensor:
        """Independent masks per member. One shared rate: torch's fused dropout. Mixed rates:
        a Bernoulli mask with each member's keep probability (rate 0 keeps everything, so such a
        member computes exactly what it computes alone)."""
        if self.same_dropout is not None:
            return F.dropout(h, self.same_dropout, training=True)
        keep = 1.0 - self.p_drop
        return h * torch.bernoulli(keep.expand_as(h)) / keep

    def _bn(self, h: torch.Tensor, i: int) -> torch.Tensor:
        """BatchNorm per member over the batch axis, h [K, B, H], as ONE native batch_norm over
        K*H features: [K, B, H] -> [B, K*H] puts each member's features in their own columns, so
        statistics never mix members (and for K = 1 it is a free view)."""
        k, b, width = h.shape
        flat = h.transpose(0, 1).reshape(b, k * width)
        out = F.batch_norm(flat, getattr(self, f"mean{i}").view(-1), getattr(self, f"var{i}").view(-1),
                           getattr(self, f"gamma{i}").view(-1), getattr(self, f"beta{i}").view(-1),
                           self.training, self.bn_torch_momentum, self.bn_eps_value)
        return out.view(b, k, width).transpose(0, 1)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters and buffers (no K axis), detached CPU copies."""
        names = [n for n, _ in self.named_parameters()] + [
            n for n, _ in self.named_buffers() if n.startswith(BUFFER_PREFIXES)]
        return {n: getattr(self, n)[k].detach().cpu().clone() for n in names}

    def load_member_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, t in state.items():
                getattr(self, n)[k].copy_(t)

    def member(self, k: int) -> nn.Sequential:
        """Member k as a plain torch.nn.Sequential taking [N, in] (eval/train like any module)."""
        layers: list[nn.Module] = []
        like = {"dtype": self.w0.dtype, "device": self.w0.device}
        if self.standardize:
            layers.append(Standardize(float(self.in_mean[k]), float(self.in_std[k])))
        for i in range(self.n_layers):
            fi, fo = self.widths[i], self.widths[i + 1]
            lin = nn.Linear(fi, fo, **like)
            with torch.no_grad():
                lin.weight.copy_(getattr(self, f"w{i}")[k].T)
                lin.bias.copy_(getattr(self, f"b{i}")[k, 0])
            layers.append(lin)
            if i == self.n_layers - 1:
                break
            bn = None
            if self.batch_norm:
                bn = nn.BatchNorm1d(fo, eps=self.bn_eps_value, momentum=self.bn_torch_momentum,
                                    **like)
                with torch.no_grad():
                    bn.weight.copy_(getattr(self, f"gamma{i}")[k, 0])
                    bn.bias.copy_(getattr(self, f"beta{i}")[k, 0])
                    bn.running_mean.copy_(getattr(self, f"mean{i}")[k, 0])
                    bn.running_var.copy_(getattr(self, f"var{i}")[k, 0])
            if bn is not None and self.bn_position == "before":
                layers.append(bn)
            layers.append(ACTIVATION_MODULES[self.act_name]())
            if bn is not None and self.bn_position == "after":
                layers.append(bn)
            if float(self.p_drop[k]) > 0:
                layers.append(nn.Dropout(float(self.p_drop[k])))
        return nn.Sequential(*layers)


class Standardize(nn.Module):
    """(x - mean) / std with the training split's pixel statistics (exported with the model)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def max_norm_(model: StackedMLP, limits: torch.Tensor) -> None:
    """Cap the norm of every unit's incoming weights at limits [K, 1, 1] (inf = no cap), in
    place after each step (max-norm regularisation, Srivastava et al. 2014)."""
    with torch.no_grad():
        for i in range(model.n_layers):
            w = getattr(model, f"w{i}")  # [K, in, out]: a unit's weights are a column
            norms = w.norm(dim=1, keepdim=True)
            w.mul_((limits / norms.clamp(min=1e-12)).clamp(max=1.0))


# ---------------------------------------------------------------------------------------------
# Keras-style summary


def summary_rows(cfg: RunConfig) -> list[tuple[str, str, int, int]]:
    """(layer, output shape, params, non-trainable params) per layer, named as Keras names them."""
    rows, counters = [], {"dense": 0, "batch_normalization": 0, "activation": 0, "dropout": 0}

    def name(kind):
        i = counters[kind]
        counters[kind] += 1
        return kind if i == 0 else f"{kind}_{i}"

    w = cfg.widths
    for i in range(len(w) - 1):
        last = i == len(w) - 2
        rows.append((f"{name('dense')} (Dense)", f"(None, {w[i + 1]})", w[i] * w[i + 1] + w[i + 1], 0))
        if last:
            break
        bn = (f"{name('batch_normalization')} (BatchNormalization)", f"(None, {w[i + 1]})",
              4 * w[i + 1], 2 * w[i + 1])
        act = (f"{name('activation')} (Activation: {cfg.activation})", f"(None, {w[i + 1]})", 0, 0)
        if cfg.batch_norm and cfg.bn_position == "before":
            rows.append(bn)
        rows.append(act)
        if cfg.batch_norm and cfg.bn_position == "after":
            rows.append(bn)
        if cfg.dropout > 0:
            rows.append((f"{name('dropout')} (Dropout {cfg.dropout:g})", f"(None, {w[i + 1]})", 0, 0))
    return rows


def param_counts(cfg: RunConfig) -> tuple[int, int, int]:
    """(total, trainable, non-trainable) exactly as Keras counts them (BN moving stats count)."""
    rows = summary_rows(cfg)
    total = sum(r[2] for r in rows)
    frozen = sum(r[3] for r in rows)
    return total, total - frozen, frozen
