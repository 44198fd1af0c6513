"""The stacked MLP: K members with identical shapes computed as one model — a list of stacked
layer objects (layers/), built once from the group's settings by `layers.plan`.

Shapes: input [K, B, in]; every tensor has the member on axis 0 (dense weight [K, in, out]; bias,
norm parameters and running statistics [K, 1, out]), so per-member hyperparameters broadcast as
[K, 1, 1] in the optimizers and keeping a subset of members is one `index_select` per tensor.

Training does not use autograd: `forward(x, tape)` has every layer record on a tape what its
backward needs, and `backward(tape, g, grads)` walks it in reverse, each layer writing its
gradients into preallocated buffers. The numbers are autograd's (tests/test_layers.py, every
registered layer in float64); the step builds no graph and allocates no gradients, which on a
2-core CPU is ~15% of the step, and on CUDA leaves one plain sequence of kernels for a graph.

Tensors are named as they are stored (weights.safetensors, checkpoints): `w0`, `b0`, `gamma0`,
`mean0`, ... — each layer names its own (`Layer.stored`); `model.w0` and
`model.named_parameters()` use those names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from .bf16 import effective
from .config import RunConfig
from .group import Group
from .layers import ACTIVATIONS, INITIALIZERS, LAYERS, Layer, plan  # noqa: F401  (re-exported)
from .layers.base import walk_back
from .layers.dense import Dense
from .layers.standardize import Standardize, StandardizeModule  # noqa: F401


class StackedMLP(nn.Module):
    """K same-shape MLPs as one module. `cfgs` may differ in anything but their group settings
    (seed, initializer, dropout rate, ...)."""

    def __init__(self, cfgs: Group | list[RunConfig], device: torch.device | str = "cpu",
                 stacked: dict[str, torch.Tensor] | None = None):
        """stacked: every member's tensors ([K, ...] each, by stored name, as `state()`), to use
        instead of initial weights drawn from each member's seed (see `select`)."""
        super().__init__()
        device, members = torch.device(device), Group.of(cfgs)
        cfgs = list(members.cfgs)
        group = effective(members.settings, device)  # bf16 only where it is native
        self.k, self.widths, self.precision = len(cfgs), group.widths, group.precision
        self.specs = plan(group, any(c.dropout > 0 for c in cfgs))
        self.layers = nn.ModuleList(LAYERS[s.kind](s, group, cfgs, device) for s in self.specs)
        self._leaves = [leaf for layer in self.layers for leaf in layer.leaves()]
        if stacked is None:
            members = [_draw(self._leaves, c) for c in cfgs]
            stacked = {n: torch.stack([m[n] for m in members]) for n in members[0]}
        for leaf in self._leaves:
            leaf.adopt({a: stacked[leaf.stored(a)].to(device) for a in (*leaf.params, *leaf.state)})
        # stored name -> (layer, attribute), parameters first in optimizer order
        self._names = {leaf.stored(a): (leaf, a) for leaf in self._leaves for a in leaf.params}
        self._state = {leaf.stored(a): (leaf, a) for leaf in self._leaves for a in leaf.state}
        self.standardize = any(isinstance(leaf, Standardize) for leaf in self._leaves)

    # --- computation -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, tape: list | None = None) -> torch.Tensor:
        """x [K, B, in] float -> logits [K, B, classes]. With a `tape` (training, under
        torch.no_grad) every layer appends what its backward needs."""
        for layer in self.layers:
            x = layer(x, tape)
        return x

    def backward(self, tape: list, g: torch.Tensor, grads: dict[str, torch.Tensor],
                 ready: Callable[[tuple[str, ...]], None] | None = None) -> None:
        """Walk the tape of one forward in reverse from g = d loss / d logits, writing
        d loss / d parameter into grads[stored name] (same shapes as the parameters). The input's
        gradient is never computed: the input is data. `ready(names)` is called as soon as a
        layer's gradients are final; nothing later in the walk reads its parameters (a layer's
        parameters are read by its own backward only), so the optimizer may update them then."""
        walk_back(tape, g, grads, ready)

    # --- tensors by stored name --------------------------------------------------------------
    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters by stored name, in layer order (the optimizer's order)."""
        for name, (layer, attr) in self._names.items():
            yield prefix + name, getattr(layer, attr)

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
        """Per-member state that is not trained (BatchNorm statistics, input statistics)."""
        for name, (layer, attr) in self._state.items():
            yield prefix + name, getattr(layer, attr)

    def get_parameter(self, target: str) -> nn.Parameter:
        layer, attr = self._names[target]
        return getattr(layer, attr)

    def get_buffer(self, target: str) -> torch.Tensor:
        layer, attr = self._state[target]
        return getattr(layer, attr)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            table = {**self.__dict__.get("_names", {}), **self.__dict__.get("_state", {})}
            if name in table:
                layer, attr = table[name]
                return getattr(layer, attr)
            raise

    def state_names(self) -> list[str]:
        """The per-member parameters, then the per-member buffers."""
        return [*self._names, *self._state]

    def state(self) -> dict[str, torch.Tensor]:
        """Every per-member tensor [K, ...] by stored name (what checkpoints hold)."""
        return {n: getattr(*where) for n, where in {**self._names, **self._state}.items()}

    @property
    def device(self) -> torch.device:
        return next(iter(self.state().values())).device

    def dense(self) -> list[Dense]:
        return [leaf for leaf in self._leaves if isinstance(leaf, Dense)]

    def set_input_stats(self, mean: float, std: float) -> None:
        """The training split's pixel mean and std (x/255 units) for input standardisation."""
        for leaf in self._leaves:
            if isinstance(leaf, Standardize):
                leaf.in_mean.fill_(mean)
                leaf.in_std.fill_(std)

    # --- members -----------------------------------------------------------------------------
    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters and buffers (no K axis), detached CPU copies."""
        return {n: t[k].detach().cpu().clone() for n, t in self.state().items()}

    def select(self, positions: list[int], cfgs: Group | list[RunConfig]) -> StackedMLP:
        """A group of the members at `positions` (their configs `cfgs`), state copied over."""
        idx = torch.tensor(positions, device=self.device)
        return StackedMLP(cfgs, self.device, {
            n: t.detach().index_select(0, idx) for n, t in self.state().items()})

    def load_member_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        tensors = self.state()
        with torch.no_grad():
            for n, t in state.items():
                tensors[n][k].copy_(t)

    def member(self, k: int) -> nn.Sequential:
        """Member k as a plain torch.nn.Sequential taking [N, in] (eval/train like any module)."""
        return nn.Sequential(*(m for layer in self.layers for m in layer.export(k)))


def _draw(leaves: list[Layer], cfg: RunConfig) -> dict[str, torch.Tensor]:
    """One member's initial tensors by stored name, drawn on the CPU from its own seed in layer
    order (so a member gets the same weights whether it trains alone or in a group)."""
    g = torch.Generator().manual_seed(cfg.seed)
    return {leaf.stored(a): t for leaf in leaves for a, t in leaf.init_member(cfg, g).items()}


def init_member(cfg: RunConfig) -> dict[str, torch.Tensor]:
    """One member's initial tensors by stored name (shapes without the K axis)."""
    return StackedMLP([cfg]).member_state(0)


def max_norm_(model: StackedMLP, limits: torch.Tensor) -> None:
    """Cap the norm of every unit's incoming weights at limits [K, 1, 1] (inf = no cap), in
    place after each step (max-norm regularisation, Srivastava et al. 2014)."""
    with torch.no_grad():
        for layer in model.dense():
            norms = layer.w.norm(dim=1, keepdim=True)  # [K, in, out]: a unit's weights are a column
            layer.w.mul_((limits / norms.clamp(min=1e-12)).clamp(max=1.0))
