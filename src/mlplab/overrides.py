"""What may change a validated suite and how large it may grow: the CLI's and the API's
overrides (epochs, seeds, only), the seeds of a suite, and the run limit (MLPLAB_MAX_RUNS),
checked by counting, never by expanding."""

from __future__ import annotations

import math
import os
from typing import Any, Protocol, TypeVar

from .errors import UserError
from .inputs import check_count, check_seed, is_int


class Suite(Protocol):
    """What these functions read of a `suite.Suite` (which validates itself with them, so this
    module cannot import it)."""

    name: str
    seeds: list[int]
    experiments: list[Any]
    grid: dict[str, list[Any]]
    defaults: dict[str, Any]
    space: dict[str, Any]

    @property
    def samples(self) -> int: ...

    def model_copy(self, *, update: dict[str, Any]) -> Any: ...


S = TypeVar("S", bound=Suite)


def max_runs() -> int:
    """The largest plan a suite may expand to (MLPLAB_MAX_RUNS, default 10,000)."""
    try:
        return int(os.environ.get("MLPLAB_MAX_RUNS", "10000"))
    except ValueError:
        raise UserError(f"MLPLAB_MAX_RUNS={os.environ['MLPLAB_MAX_RUNS']!r} is not a whole number") from None


def count_runs(suite: Suite) -> tuple[int, int]:
    """(configurations, runs) without expanding anything."""
    configs = suite.samples * sum(math.prod(len(v) for v in {**suite.grid, **e.grid}.values())
                                  for e in suite.experiments)
    return configs, configs * len(suite.seeds)


def check_size(suite: Suite) -> None:
    configs, runs = count_runs(suite)
    if runs > max_runs():
        raise UserError(f"suite {suite.name}: {configs:,} configurations x {len(suite.seeds)} seeds = "
                        f"{runs:,} runs, over the limit of {max_runs():,}; shrink the grid, or raise "
                        "the limit with MLPLAB_MAX_RUNS")


def seed_list(value: Any, where: str) -> list[int]:
    """`seeds = N` (0 .. N-1) or a list of seeds, each 0 .. 2^63-1; a count is checked against
    the run limit before any list is built (seeds = 10**12 must not allocate)."""
    if is_int(value):
        if value < 1:
            raise UserError(f"{where}: seeds must be a positive count or a list of seeds, got {value}")
        if value > max_runs():
            raise UserError(f"{where}: seeds = {value:,} is over the limit of {max_runs():,} runs "
                            "(MLPLAB_MAX_RUNS raises it)")
        return list(range(value))
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: seeds must be a positive count or a non-empty list of seeds, "
                        f"got {value!r}")
    for s in value:
        check_seed(s, where)
    return list(dict.fromkeys(value))


def apply_overrides(suite: S, *, epochs: int | None = None, seeds: int | None = None,
                    only: tuple[str, ...] = ()) -> S:
    """The CLI's --epochs/--seeds/--only as a new suite (validated like the file itself)."""
    update: dict[str, Any] = {}
    if seeds is not None:  # a count: checked against the run limit before a list is built
        update["seeds"] = list(range(check_count(seeds, "seeds", max_runs())))
    if epochs is not None:
        check_count(epochs, "epochs")
        gridded = [e.name for e in suite.experiments if "epochs" in {**suite.grid, **e.grid}]
        if gridded:  # the grid's values would win: say so rather than ignore the option
            raise UserError(f"epochs: the grid of {gridded[0]!r} sets epochs itself; change the "
                            "suite's grid instead")
        if "epochs" in suite.space:
            raise UserError("epochs: the suite's [space] samples epochs itself; change the space "
                            "instead")
        update["defaults"] = {**suite.defaults, "epochs": epochs}
        update["experiments"] = [
            e.model_copy(update={"settings": {**e.settings, "epochs": epochs}}) for e in suite.experiments
        ]
    if only:
        names = [e.name for e in suite.experiments]
        missing = [o for o in only if o not in names]
        if missing:
            raise UserError(f"only {missing[0]!r} is not an experiment of suite {suite.name}; "
                            f"experiments: {', '.join(names)}")
        update["experiments"] = [e for e in update.get("experiments", suite.experiments)
                                 if e.name in only]
    result = suite.model_copy(update=update)
    check_size(result)
    return result
