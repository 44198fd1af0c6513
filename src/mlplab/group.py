"""Who trains together and what they share: a `Group` (its members' configurations and their
`GroupSettings`, computed and checked once) and `plan` (cells into groups). Torch-free.

Two runs train fused exactly when their shared settings are equal (`config.SHARED`,
`RunConfig.group_key`): the same shapes and code path; they may differ in anything else (seed,
learning rate, weight decay, dropout rate, initializer, epochs, patience, ...)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .config import SHARED, Augmentation, RunConfig

MAX_GROUP = 64  # members per fused group: bounds memory; more groups run one after another


@dataclass(frozen=True)
class GroupSettings:
    """What every member of a fused group shares, by name (the fields are `config.SHARED`)."""

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

    @classmethod
    def of(cls, cfg: RunConfig) -> GroupSettings:
        return cls.named(cfg.group_key())

    @classmethod
    def named(cls, key: tuple) -> GroupSettings:
        """From a `group_key`, by name: a field missing on either side is a TypeError."""
        return cls(**dict(zip(SHARED, key, strict=True)))


@dataclass(frozen=True)
class Group:
    """K >= 1 members that train as one computation. Built from configurations that share their
    settings (else a ValueError naming group_key); `settings` is what they share."""

    cfgs: tuple[RunConfig, ...]
    settings: GroupSettings = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cfgs", tuple(self.cfgs))
        if not self.cfgs:
            raise ValueError("a group has at least one member")
        key = self.cfgs[0].group_key()
        if any(c.group_key() != key for c in self.cfgs[1:]):
            raise ValueError("members of a group must share shapes and code path (group_key)")
        object.__setattr__(self, "settings", GroupSettings.named(key))

    @classmethod
    def of(cls, cfgs: Group | Iterable[RunConfig]) -> Group:
        """A Group as it is, or built (and checked) from configurations."""
        return cfgs if isinstance(cfgs, Group) else cls(tuple(cfgs))

    def subset(self, positions: Iterable[int]) -> Group:
        """The members at `positions`, in that order (the same settings: not checked again)."""
        sub = object.__new__(Group)
        object.__setattr__(sub, "cfgs", tuple(self.cfgs[p] for p in positions))
        object.__setattr__(sub, "settings", self.settings)
        return sub

    def __len__(self) -> int:
        return len(self.cfgs)

    def __iter__(self) -> Iterator[RunConfig]:
        return iter(self.cfgs)

    def __getitem__(self, i: int) -> RunConfig:
        return self.cfgs[i]

    @property
    def run_ids(self) -> list[str]:
        return [c.run_id for c in self.cfgs]

    @property
    def epochs(self) -> int:
        """The group's last epoch: its longest member's."""
        return max(c.epochs for c in self.cfgs)

    @property
    def label(self) -> str:
        names = list(dict.fromkeys(c.name for c in self.cfgs))
        return f"{self.cfgs[0].architecture} x{len(self.cfgs)}: " + ", ".join(names)


def plan(cells: list[RunConfig], max_group: int = MAX_GROUP) -> list[Group]:
    """Group cells by their shared settings (first-seen order), each group at most max_group
    members."""
    by_key: dict[tuple, list[RunConfig]] = {}
    for c in cells:
        by_key.setdefault(c.group_key(), []).append(c)
    return [Group(tuple(cs[i:i + max_group])) for cs in by_key.values()
            for i in range(0, len(cs), max_group)]
