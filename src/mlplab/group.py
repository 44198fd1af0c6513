"""What the members of one fused group share: `GroupSettings` (shapes and code path, read in one
place by `group_settings`) and `Augmentation` (the augmentation settings by name). Two runs train
fused exactly when their GroupSettings are equal (`RunConfig.group_key`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .config import RunConfig


class Augmentation(NamedTuple):
    """On-device augmentation: maximum shift (pixels), rotation and shear (degrees), relative
    zoom, elastic distortion strength and smoothness (pixels)."""

    shift: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = 0.0

    @property
    def on(self) -> bool:
        return any((self.shift, self.rotate, self.scale, self.shear, self.elastic_alpha))


@dataclass(frozen=True)
class GroupSettings:
    """What every member of a fused group shares (its shapes and code path), read in one place:
    `group_settings(cfgs)`. Two runs train fused exactly when these are equal."""

    dataset: str
    validation: str
    val_size: int
    train_size: int | None
    widths: tuple[int, ...]
    activation: str
    norm: str
    norm_position: str
    residual: bool
    bn_momentum: float
    bn_epsilon: float
    optimizer: str
    batch_size: int
    precision: str
    label_smoothing: float
    input_norm: str
    augmentation: Augmentation


def group_settings(cfgs: list[RunConfig]) -> GroupSettings:
    """The settings a group's members share; a ValueError when they do not share them."""
    first = cfgs[0].group_settings()
    if any(c.group_settings() != first for c in cfgs[1:]):
        raise ValueError("members of a group must share shapes and code path (group_key)")
    return first
