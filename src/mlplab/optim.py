"""Stacked optimizers: one update for K members whose hyperparameters are [K, 1, 1] tensors.

Each follows torch.optim's formula exactly (the oracle tests compare member by member), works on
params and grads given as lists, keeps its step count on the device (no host sync, and safe to
capture in a CUDA graph), and never allocates Python-side state per step.

Speed: SGD and Adam(W) run torch's fused multi-tensor kernels (one pass over each tensor instead
of ~10 elementwise passes). Members with identical hyperparameters share one call over a slice
of the stacked tensors; each distinct setting is one more call. Those kernels are private torch
API, so they are used only behind a check (kernels.py); `_update` is the plain-tensor formula:
the fallback, RMSprop's only path, and the readable definition.
"""

from __future__ import annotations

import math

import torch

from . import kernels
from .config import RunConfig
from .group import Group

# Learning-rate schedules by name: (config, epoch after warm-up, epochs after warm-up) -> factor.
SCHEDULES = {
    "constant": lambda c, e, n: 1.0,
    "step": lambda c, e, n: c.lr_gamma ** (e // c.lr_step_epochs),
    "cosine": lambda c, e, n: c.lr_min_factor + (1 - c.lr_min_factor) * 0.5 * (
        1 + math.cos(math.pi * e / n)),
    # one-cycle: rise from lr/10 to lr over the first 30%, then cosine down to the floor
    "onecycle": lambda c, e, n: (0.1 + 0.9 * e / max(1, round(0.3 * n))) if e < round(0.3 * n)
    else SCHEDULES["cosine"](c, e - round(0.3 * n), max(1, n - round(0.3 * n))),
}


def lr_scale(cfg: RunConfig, epoch: int) -> float:
    """The factor on cfg.lr for 0-based `epoch`: linear warm-up, then the named schedule
    (changed once per epoch: no host traffic inside an epoch)."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    e, n = epoch - cfg.warmup_epochs, max(1, cfg.epochs - cfg.warmup_epochs)
    return SCHEDULES[cfg.lr_schedule](cfg, e, n)


def _per_member(cfgs: list[RunConfig], field: str, device) -> torch.Tensor:
    return torch.tensor([float(getattr(c, field)) for c in cfgs], device=device).view(-1, 1, 1)


class Stacked:
    """Base: per-member hyperparameters, a device step counter, zeroed state buffers."""

    fields: tuple[str, ...] = ("lr", "weight_decay")
    slots: tuple[str, ...] = ()

    fused: bool = False  # may use a fused kernel: `kernel` (kernels.PRIVATE), where it works
    kernel: str = ""

    def __init__(self, params: list[torch.Tensor], cfgs: list[RunConfig]):
        device = params[0].device
        self.params = params
        self.hp = {f: _per_member(cfgs, f, device) for f in self.fields}
        self.base_lr = self.hp["lr"].clone()
        self.t = torch.zeros((), device=device)
        self.state = {s: [torch.zeros_like(p) for p in params] for s in self.slots}
        # Runs of consecutive members with equal hyperparameters: (start, stop, settings, lr).
        self.buckets = []
        for k, c in enumerate(cfgs):
            hp = {f: float(getattr(c, f)) for f in self.fields}
            # members of a bucket must also share their schedule: they share one lr tensor
            hp["schedule"] = (c.lr_schedule, c.warmup_epochs, c.epochs, c.lr_step_epochs,
                              c.lr_gamma, c.lr_min_factor)
            if self.buckets and self.buckets[-1][2] == hp:
                self.buckets[-1][1] = k + 1
            else:
                self.buckets.append([k, k + 1, hp, None])
        for b in self.buckets:  # lr as a device tensor: schedules change it without recapture
            b[3] = torch.tensor(b[2]["lr"], device=device)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        """One step of every parameter: begin(), then update() of all of them."""
        self.begin()
        self.update(range(len(self.params)), grads)

    def begin(self) -> None:
        """Count a new step (on the device: no sync, graph-safe)."""
        self.t += 1

    @torch.no_grad()
    def update(self, which, grads: list[torch.Tensor]) -> None:
        """Update the parameters at indices `which` with their gradients (same order). The
        training step calls this layer by layer during the backward pass, while each gradient
        is still in cache: the numbers are the same as one update at the end, since a parameter
        is only updated once nothing later in the backward reads it."""
        which = list(which)
        params = [self.params[j] for j in which]
        kernel = kernels.private(self.kernel) if self.fused else None
        if kernel is None:  # the public formula
            for j, p, g in zip(which, params, grads, strict=True):
                self._update(j, p, g)
            return
        state = {s: [ts[j] for j in which] for s, ts in self.state.items()}
        if len(self.buckets) == 1:  # the common case: one call on the whole tensors
            _, _, hp, lr = self.buckets[0]
            self._fused(kernel, params, list(grads), state, hp, lr)
            return
        for start, stop, hp, lr in self.buckets:
            part = slice(start, stop)  # views of the stacked tensors, no copies
            self._fused(kernel, [p[part] for p in params], [g[part] for g in grads],
                        {s: [t[part] for t in ts] for s, ts in state.items()}, hp, lr)

    def _fused(self, kernel, params, grads, state, hp, lr) -> None:
        raise NotImplementedError

    def _update(self, i: int, p: torch.Tensor, g: torch.Tensor) -> None:
        raise NotImplementedError

    # --- its state, by name: "t" (the step count, shared) and "<slot>.<i>" ([K, ...] each) -------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The optimizer's state by name (live tensors: a checkpoint copies them)."""
        return {"t": self.t, **{f"{s}.{i}": t for s, ts in self.state.items() for i, t in enumerate(ts)}}

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy a `state_dict` (same names and shapes) into this optimizer's state."""
        for name, t in self.state_dict().items():
            t.copy_(tensors[name])

    def state_shapes(self, k: int) -> dict[str, tuple[int, ...]]:
        """The shape of each `state_dict` tensor for a group of k members like this one."""
        return {n: tuple(t.shape) if n == "t" else (k, *t.shape[1:])
                for n, t in self.state_dict().items()}

    @torch.no_grad()
    def select(self, keep: list[int], params: list[torch.Tensor], cfgs) -> Stacked:
        """The same optimizer for the members at positions `keep` (their parameters `params`,
        their configurations `cfgs`), with their state (and the shared step count)."""
        new = type(self)(params, list(cfgs))
        idx = torch.tensor(keep, device=self.t.device)
        mine = self.state_dict()
        for name, t in new.state_dict().items():
            t.copy_(mine[name] if name == "t" else mine[name].index_select(0, idx))
        return new

    def lrs(self) -> list[float]:
        """Each member's learning rate now (schedules included): one host read."""
        return self.hp["lr"].flatten().tolist()

    def state_tensors(self) -> list[torch.Tensor]:
        """Everything the optimizer mutates (for snapshot/restore around graph warm-up)."""
        return [self.t, *(t for ts in self.state.values() for t in ts)]

    def set_lr_scales(self, scales: list[float]) -> None:
        """Set member k's learning rate to its base lr * scales[k] (schedules), in place, so a
        captured CUDA graph sees the new values."""
        self.hp["lr"].copy_(self.base_lr * torch.tensor(scales, device=self.t.device).view(-1, 1, 1))
        for start, _, hp, lr in self.buckets:
            lr.fill_(hp["lr"] * scales[start])


class SGD(Stacked):
    """torch.optim.SGD (dampening 0): L2 weight decay, optional momentum / Nesterov."""

    fields = ("lr", "weight_decay", "momentum")
    slots = ("buf",)
    use_momentum, nesterov = False, False
    fused, kernel = True, "fused_sgd"

    def _fused(self, kernel, params, grads, state, hp, lr):
        mu = hp["momentum"] if self.use_momentum else 0.0
        kernel(params, grads, state["buf"] if mu > 0 else [],  # kernel's rule
                          weight_decay=hp["weight_decay"], momentum=mu, lr=lr,
                          dampening=0.0, nesterov=self.nesterov and mu > 0, maximize=False,
                          is_first_step=False)  # zero buffers: the first step gives buf = g

    def _update(self, i, p, g):
        g = g + self.hp["weight_decay"] * p
        if self.use_momentum:
            buf = self.state["buf"][i]
            buf.mul_(self.hp["momentum"]).add_(g)  # first step: buf = g, as torch does
            g = g + self.hp["momentum"] * buf if self.nesterov else buf
        p.sub_(self.hp["lr"] * g)


class Momentum(SGD):
    use_momentum = True


class Nesterov(SGD):
    use_momentum, nesterov = True, True


class Adam(Stacked):
    """torch.optim.Adam (L2 weight decay added to the gradient)."""

    fields = ("lr", "weight_decay", "beta1", "beta2", "eps")
    slots = ("m", "v")
    decoupled = False
    fused, kernel = True, "fused_adam"

    def _fused(self, kernel, params, grads, state, hp, lr):
        kernel(params, grads, state["m"], state["v"], [], [self.t] * len(params), lr=lr,
               beta1=hp["beta1"], beta2=hp["beta2"], weight_decay=hp["weight_decay"],
               eps=hp["eps"], amsgrad=False, maximize=False)

    def _update(self, i, p, g):
        hp = self.hp
        if self.decoupled:
            p.mul_(1 - hp["lr"] * hp["weight_decay"])
        else:
            g = g + hp["weight_decay"] * p
        m, v = self.state["m"][i], self.state["v"][i]
        m.lerp_(g, 1 - hp["beta1"])
        v.mul_(hp["beta2"]).addcmul_(g, g * (1 - hp["beta2"]))
        bc1 = 1 - hp["beta1"] ** self.t
        bc2_sqrt = (1 - hp["beta2"] ** self.t).sqrt()
        p.sub_(hp["lr"] / bc1 * m / (v.sqrt() / bc2_sqrt + hp["eps"]))


class AdamW(Adam):
    """torch.optim.AdamW: weight decay decoupled from the gradient."""

    decoupled = True
    kernel = "fused_adamw"


class RMSprop(Stacked):
    """torch.optim.RMSprop with alpha = rho (Keras name), no momentum, not centered."""

    fields = ("lr", "weight_decay", "rho", "eps")
    slots = ("sq",)

    def _update(self, i, p, g):
        g = g + self.hp["weight_decay"] * p
        sq = self.state["sq"][i]
        sq.mul_(self.hp["rho"]).addcmul_(g, g * (1 - self.hp["rho"]))
        p.sub_(self.hp["lr"] * g / (sq.sqrt() + self.hp["eps"]))


OPTIMIZERS: dict[str, type[Stacked]] = {
    "sgd": SGD, "momentum": Momentum, "nesterov": Nesterov,
    "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop,
}


def make_optimizer(params: list[torch.Tensor], cfgs: Group | list[RunConfig]) -> Stacked:
    """The stacked optimizer for a group (all members share the optimizer kind)."""
    group = Group.of(cfgs)
    return OPTIMIZERS[group.settings.optimizer](params, list(group.cfgs))
