"""Search: a suite's `[search]` table (how configurations are chosen and pruned) and `[space]`
(distributions to sample from), and the successive-halving decisions. Pure functions over plain
values, no torch: the driver that pauses groups at the rungs is `halving.py`.

    [search]
    method = "random"          # "grid" (the default), "halving" (a grid, pruned), "random" or "tpe"
    samples = 20               # random: how many configurations per experiment
    trials = 24                # tpe (Optuna, mlplab[optuna]): configurations proposed in all,
    batch = 8                  #   K at a time (constant liar), trained as fused groups (search_tpe.py)
    seed = 0                   # random: the same seed gives the same samples
    halving = true             # random: prune with successive halving (the default); grid: false
    rule = "noise"             # the best 1/eta, those within seed noise, and at the first rung the
                               # best with each value of each setting; "top": the best 1/eta only
    eta = 6                    # keep the best 1/eta at each rung (default 6 for "noise", 3 for "top")
    alpha = 0.05               # rule "noise": prune only what is worse at one-sided p < alpha
    min_epochs = 1             # the first rung; the next ones at min_epochs * eta^i
    metric = "val_acc"         # or "val_loss": validation only, never the test set

    [space]
    lr = { log_uniform = [1e-4, 1e-2] }
    dropout = { uniform = [0.0, 0.6] }
    architecture = { choice = ["512-256", "1024-512-256"] }
    patience = { int_uniform = [2, 5] }

Successive halving (Jamieson & Talwalkar 2016), synchronous: every group pauses at a rung until
all of them have reached it; configurations (all their seeds together) are ranked by the mean of
the metric over their seeds at the rung; the best ceil(n / eta) go on, and with rule "noise" every
other one not significantly worse than the last of them (pruning.py); the others stop there.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from .config import RUN_FIELDS, Frozen, RunConfig, validate_run
from .errors import UserError
from .inputs import explain
from .pruning import METRICS, Decision, decide, rungs, running_at, seed_score  # noqa: F401

SIGNIFICANT = 4  # sampled floats are rounded to this many significant digits: readable names


class SearchSpec(Frozen):
    """A validated [search] table. Strict types: halving = "no" is not false, eta = 3.0 not 3."""

    model_config = ConfigDict(strict=True)

    method: Literal["grid", "halving", "random", "tpe"] = "grid"
    halving: bool | None = None  # None: on for "halving" and "random", off for "grid"
    eta: int = Field(None, ge=2)  # None: 6 with rule "noise", 3 with rule "top" (filled in)
    min_epochs: int = Field(1, ge=1)
    metric: Literal["val_acc", "val_loss"] = "val_acc"
    samples: int | None = Field(None, ge=1)
    trials: int | None = Field(None, ge=1)  # tpe: configurations proposed in all
    batch: int | None = Field(None, ge=1)  # tpe: proposed together, trained as fused groups
    seed: int = Field(0, ge=0)
    rule: Literal["noise", "top"] = "noise"  # pruning.py: the top 1/eta ("top"), and ties ("noise")
    alpha: float = Field(0.05, gt=0, lt=0.5)  # rule "noise": prune only at one-sided p < alpha

    @model_validator(mode="before")
    @classmethod
    def _default_eta(cls, data: Any) -> Any:
        # the defaults the replay chose (bench/search_replay.py): eta 6 with ties kept, and
        # today's eta 3 for the plain top-1/eta rule
        if isinstance(data, dict) and data.get("eta") is None:
            data = {**data, "eta": 3 if data.get("rule") == "top" else 6}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpec:
        if self.method == "random" and self.samples is None:
            raise ValueError("samples: method = \"random\" needs samples = N (how many configurations)")
        if self.method != "random" and self.samples is not None:
            raise ValueError(f"samples: only method = \"random\" samples (method is {self.method!r})")
        if self.method == "tpe" and (self.trials is None or self.batch is None):
            raise ValueError("trials: method = \"tpe\" needs trials = N and batch = K (proposed together)")
        if self.method != "tpe" and (self.trials is not None or self.batch is not None):
            raise ValueError("trials/batch: only method = \"tpe\" proposes in batches "
                             f"(method is {self.method!r})")
        if self.method == "tpe" and self.batch > self.trials:
            raise ValueError(f"batch: {self.batch} is more than trials = {self.trials}; batch ≤ trials")
        if self.method == "halving" and self.halving is False:
            raise ValueError("halving: method = \"halving\" with halving = false; use method = \"grid\"")
        return self

    @property
    def prunes(self) -> bool:
        return self.halving if self.halving is not None else self.method != "grid"


SEARCH_KEYS = tuple(SearchSpec.model_fields)
DISTRIBUTIONS = ("log_uniform", "uniform", "int_uniform", "choice")


def parse_search(value: Any, where: str) -> SearchSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a table, got {type(value).__name__}")
    unknown = sorted(set(value) - set(SEARCH_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(SEARCH_KEYS)}")
    try:
        return SearchSpec.model_validate(value)
    except ValidationError as e:
        err = e.errors()[0]  # the cross-field checks name their field themselves
        why = explain(e) if err["loc"] else err["msg"].removeprefix("Value error, ")
        raise UserError(f"{where}: {why}") from None


def parse_space(value: Any, where: str, defaults: dict[str, Any]) -> dict[str, dict[str, list]]:
    """{key: {distribution: arguments}}, every key a run setting, every bound checked as a value
    of that setting (a bad range fails here, not at the one sample that falls outside)."""
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a table, got {type(value).__name__}")
    for key, dist in value.items():
        at = f"{where}.{key}"
        if key not in RUN_FIELDS or key in ("name", "seed"):
            raise UserError(f"{at}: unknown key {key!r}; allowed keys: {', '.join(RUN_FIELDS[1:])}")
        if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
            raise UserError(f"{at} must be one distribution, e.g. {key} = {{ uniform = [0.0, 0.5] }}; "
                            f"allowed: {', '.join(DISTRIBUTIONS)}")
        (kind, args), = dist.items()
        for v in _check_args(kind, args, at):
            try:
                validate_run({**defaults, key: v}, at)
            except UserError as e:
                raise UserError(f"{at}: {kind} value {v!r}: {str(e).split(f'{at}: ', 1)[-1]}") from None
    return value


def _check_args(kind: str, args: Any, at: str) -> list[Any]:
    """The distribution's arguments checked; the values that must be valid settings."""
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise UserError(f"{at}: choice needs a non-empty list of values")
        if len({json.dumps(a, sort_keys=True) for a in args}) != len(args):
            raise UserError(f"{at}: choice lists a value more than once; each value once")
        return args
    number = (int,) if kind == "int_uniform" else (int, float)
    if (not isinstance(args, list) or len(args) != 2
            or not all(isinstance(a, number) and not isinstance(a, bool) for a in args)):
        what = "two whole numbers" if kind == "int_uniform" else "two numbers"
        raise UserError(f"{at}: {kind} needs [low, high], {what}, got {args!r}")
    lo, hi = args
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or (kind != "int_uniform" and lo == hi):
        raise UserError(f"{at}: {kind} needs low < high, got {args!r}")
    if kind == "log_uniform" and lo <= 0:
        raise UserError(f"{at}: log_uniform needs low > 0, got {args!r}")
    # a float in the middle too: uniform over an integer setting fails here, with its name
    return [lo, hi] if kind == "int_uniform" else [lo, hi, _round((lo + hi) / 2 + 1e-3 * (hi - lo))]


def _round(x: float) -> float:
    return float(f"{x:.{SIGNIFICANT}g}")


def draw(kind: str, args: list, rng: random.Random) -> Any:
    """One value of a distribution."""
    if kind == "choice":
        return args[rng.randrange(len(args))]
    if kind == "int_uniform":
        return rng.randint(args[0], args[1])
    if kind == "log_uniform":
        return _round(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
    return _round(rng.uniform(args[0], args[1]))


def sample(space: dict[str, dict[str, list]], samples: int, seed: int) -> list[dict[str, Any]]:
    """`samples` settings dicts drawn from the space. Each value comes from its own stream,
    seeded by (seed, sample, key) through Python's string seeding (SHA-512, the same on every
    platform and Python version): the same seed gives the same samples, and adding a key to the
    space leaves the other keys' values as they were."""
    out = []
    for i in range(samples):
        out.append({key: draw(kind, args, random.Random(f"mlplab:{seed}:{i}:{key}"))
                    for key, dist in space.items() for kind, args in dist.items()})
    return out


def config_key(cfg_json: dict) -> str:
    """A configuration: every setting but the seed (its seeds are kept or pruned together).
    A setting missing from the JSON takes its default, so a run stored before the setting
    existed and a run stored after (at its default) are one configuration."""
    return json.dumps({k: v for k, v in {**_DEFAULTS, **cfg_json}.items() if k != "seed"},
                      sort_keys=True)


_DEFAULTS = RunConfig().model_dump(mode="json")  # every setting at its default, as stored
