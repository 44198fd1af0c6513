"""What every stacked layer is: K members' tensors on axis 0, its initialisation from a member's
seed, a forward that records on a tape what its backward needs, the explicit backward, its export
as plain `torch.nn` modules, and its rows of the Keras-style summary.

A layer adds a kind to the engine in one file plus its line in `LAYERS` (layers/__init__.py); the
oracle test over that registry (tests/test_layers.py) checks it against autograd and torch.nn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import RunConfig
from ..group import GroupSettings


@dataclass(frozen=True)
class Spec:
    """One layer of the plan built from a config: its kind, the hidden block (or dense layer) it
    belongs to, its output width, the input width where it has one, and kind-specific options
    (an activation's name, ...). A residual's block is `inner`."""

    kind: str
    index: int
    width: int
    n_in: int = 0
    opts: dict[str, Any] = field(default_factory=dict)
    inner: tuple[Spec, ...] = ()


# (layer name, output shape, params, non-trainable params, initializer) as Keras prints them
Row = tuple[str, str, int, int, str]
Namer = Callable[[str], str]  # Keras' layer names: "dense", "dense_1", ...


class Layer(nn.Module):
    """A stacked layer of K members. Subclasses declare `params` (trained, in optimizer order)
    and `state` (per-member buffers that are kept but not trained, e.g. BatchNorm's moving
    statistics), each [K, ...]; `stored` names them in weights files and checkpoints."""

    kind: ClassVar[str] = ""
    params: ClassVar[tuple[str, ...]] = ()
    state: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: Spec, group: GroupSettings, cfgs: list[RunConfig],
                 device: torch.device):
        super().__init__()
        self.spec, self.k = spec, len(cfgs)
        self.grad_names: tuple[str, ...] = ()  # stored names of its parameters (set by adopt)

    # --- tensors -----------------------------------------------------------------------------
    def stored(self, attr: str) -> str:
        """The tensor's name in weights.safetensors and checkpoints (stable across versions)."""
        return f"{attr}{self.spec.index}"

    def init_member(self, cfg: RunConfig, g: torch.Generator) -> dict[str, torch.Tensor]:
        """One member's initial tensors (attribute -> tensor without the K axis), drawing from its
        generator `g` if the layer is random."""
        return {}

    def adopt(self, stacked: dict[str, torch.Tensor]) -> None:
        """Take the stacked [K, ...] tensors (attribute -> tensor) as parameters and buffers."""
        for attr in self.params:
            self.register_parameter(attr, nn.Parameter(stacked[attr]))
        self.grad_names = tuple(self.stored(a) for a in self.params)
        for attr in self.state:
            self.register_buffer(attr, stacked[attr])

    def member_into(self, module: nn.Module, k: int, names: dict[str, str]) -> nn.Module:
        """Copy member k's tensors into a torch.nn module: names maps the module's tensor names
        to this layer's attributes (each [K, 1, H] -> [H])."""
        with torch.no_grad():
            for theirs, ours in names.items():
                getattr(module, theirs).copy_(getattr(self, ours)[k].reshape(-1))
        return module

    def leaves(self) -> list[Layer]:
        """This layer, or the layers inside it (a residual block)."""
        return [self]

    # --- computation -------------------------------------------------------------------------
    def forward(self, h: torch.Tensor, tape: list | None = None) -> torch.Tensor:
        """h [K, B, width_in] -> [K, B, width]; with a tape (training, no autograd), append
        (self, *what the backward needs)."""
        raise NotImplementedError

    def backward(self, g: torch.Tensor, grads: list[torch.Tensor], *saved) -> torch.Tensor | None:
        """g = d loss / d output -> d loss / d input; writes d loss / d params[j] into grads[j]
        (preallocated, same shapes). None where no one needs the input's gradient."""
        raise NotImplementedError

    # --- export and summary ------------------------------------------------------------------
    def export(self, k: int) -> list[nn.Module]:
        """Member k as plain torch.nn modules (for member(k), ONNX, TorchScript)."""
        raise NotImplementedError

    @classmethod
    def summary(cls, spec: Spec, cfg: RunConfig, name: Namer) -> list[Row]:
        """Its rows of the Keras-style summary."""
        return []

    @classmethod
    def example(cls, width: int) -> Spec:
        """A small instance of this kind (width in = width out) for the registry's oracle test."""
        return Spec(cls.kind, 1, width, n_in=width)


def walk_back(tape: list, g: torch.Tensor, grads: dict[str, torch.Tensor],
              ready: Callable[[tuple[str, ...]], None] | None = None) -> torch.Tensor | None:
    """Walk a tape in reverse from g = d loss / d output: each layer writes its parameters'
    gradients into grads[stored name] and `ready(names)` is called as soon as they are final
    (nothing later in the walk reads those parameters). Returns d loss / d input, or None where
    the first layer's input is data (nothing before it needs a gradient)."""
    for layer, *saved in reversed(tape):
        names = layer.grad_names
        g = layer.backward(g, [grads[n] for n in names], *saved)
        if names and ready is not None:
            ready(names)
        if g is None:
            break
    return g


def per_member(cfgs: list[RunConfig], f: Callable[[RunConfig], float],
               device: torch.device) -> torch.Tensor:
    """A per-member value as a [K, 1, 1] tensor (broadcasts over batch and features)."""
    return torch.tensor([float(f(c)) for c in cfgs], device=device).view(-1, 1, 1)
