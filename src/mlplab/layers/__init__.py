"""The stacked layers, by kind, and the plan: the order of layers built once from a config.

Adding a layer: one file here with a `Layer` subclass (tensors, init_member, forward with its
tape entry, backward, export, summary) and its line in LAYERS; plan() says where it goes.
tests/test_layers.py checks every registered kind against autograd and torch.nn.
"""

from __future__ import annotations

from ..group import GroupSettings
from .activation import ACTIVATIONS, Activation
from .base import Layer, Row, Spec
from .batch_norm import BatchNorm
from .dense import Dense
from .dropout import Dropout
from .init import INITIALIZERS
from .layer_norm import LayerNorm
from .residual import Residual
from .standardize import Standardize

LAYERS: dict[str, type[Layer]] = {
    "dense": Dense,
    "batch": BatchNorm,
    "layer": LayerNorm,
    "activation": Activation,
    "dropout": Dropout,
    "residual": Residual,
    "standardize": Standardize,
}

__all__ = ["ACTIVATIONS", "INITIALIZERS", "LAYERS", "Layer", "Row", "Spec", "plan"]


def plan(group: GroupSettings, dropout: bool) -> list[Spec]:
    """The layers of one network, in order: [standardize], then per hidden block Dense ->
    norm before or after the activation -> activation -> [dropout] (the course notebook's order:
    BatchNorm after ReLU, then Dropout), wrapped in a residual skip where asked and the widths
    allow; the output Dense last. dropout: whether any member drops (a group shares one plan)."""
    w = group.widths
    specs = [Spec("standardize", 0, w[0])] if group.input_norm == "standardize" else []
    for i in range(len(w) - 1):
        skip = group.residual and w[i] == w[i + 1] and i < len(w) - 2
        dense = Spec("dense", i, w[i + 1], n_in=w[i], opts={"input_grad": i > 0 or skip})
        if i == len(w) - 2:
            specs.append(dense)
            break
        block = [dense, Spec("activation", i, w[i + 1], opts={"name": group.activation})]
        if group.norm != "none":
            block.insert(1 if group.norm_position == "before" else 2, Spec(group.norm, i, w[i + 1]))
        if dropout:
            block.append(Spec("dropout", i, w[i + 1]))
        specs += [Spec("residual", i, w[i + 1], inner=tuple(block))] if skip else block
    return specs
