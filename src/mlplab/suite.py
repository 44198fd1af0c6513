"""Suites: TOML files (or built-in ones) that list named experiments, optional grids and seeds,
validated completely before anything runs and expanded into cells (run config x seed).

A suite is TOML::

    name = "mine"
    seeds = 3                       # or a list of seeds: [0, 1, 7]
    [defaults]                      # applied to every experiment
    epochs = 20
    [[experiment]]
    name = "2-hidden"
    architecture = "784-512-256-10"
    [experiment.grid]               # optional: cartesian product, this experiment only
    dropout = [0.0, 0.5]
    [grid]                          # optional: cartesian product over every experiment
    batch_norm = [false, true]
    [search]                        # optional: halving, random search (see search.py)
    method = "random"
    samples = 20
    [space]                         # random search: distributions, e.g.
    lr = { log_uniform = [1e-4, 1e-2] }
"""

from __future__ import annotations

import collections
import itertools
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import field_validator, model_validator

from .config import RUN_FIELDS, Frozen, RunConfig, validate_run
from .errors import UserError
from .inputs import check_name, check_seed, check_text
from .overrides import apply_overrides, check_size, count_runs, max_runs, seed_list  # noqa: F401
from .search import SearchSpec, parse_search, parse_space, sample


class Experiment(Frozen):
    """One named entry of a suite: overrides of the defaults, and an optional own grid."""

    name: str
    settings: dict[str, Any]
    grid: dict[str, list[Any]] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "experiment")


class Suite(Frozen):
    """A validated suite. From Python, build it like its TOML::

        Suite(name="mine", seeds=3, defaults={"epochs": 20},
              experiments=[{"name": "2-hidden", "architecture": "512-256"},
                           {"name": "wide", "architecture": "2048", "grid": {"dropout": [0, 0.5]}}],
              grid={"batch_norm": [False, True]})

    Every run is validated at once (a UserError names the experiment and the field)."""

    name: str
    description: str = ""
    seeds: list[int]
    experiments: list[Experiment]
    grid: dict[str, list[Any]] = {}
    defaults: dict[str, Any] = {}
    search: SearchSpec | None = None
    space: dict[str, dict[str, list[Any]]] = {}
    proposals: list[tuple[int, dict[str, Any]]] = []  # tpe: one batch (trial number, values)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "suite")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise UserError("suite: seeds must not be empty")
        for s in v:
            check_seed(s, "suite")
        return v

    @model_validator(mode="before")
    @classmethod
    def _from_python(cls, data: Any) -> Any:
        """Flat experiment dicts or a seed count (the TOML's shape) -> the validated fields."""
        if not isinstance(data, dict):
            return data
        if data.get("_parsed"):  # from parse_suite: already validated
            return {k: v for k, v in data.items() if k != "_parsed"}
        exps = data.get("experiments")
        flat = isinstance(exps, list) and any(isinstance(e, dict) and "settings" not in e for e in exps)
        if not (flat or isinstance(data.get("seeds"), int) or "experiments" not in data):
            return data
        toml = {k: v for k, v in data.items() if k != "experiments"}
        if exps is not None:
            toml["experiment"] = exps
        parsed = parse_suite(toml, str(data.get("name", "suite")))
        return dict(parsed)

    def runs(self) -> list[RunConfig]:
        """Every run config of the suite (seed 0 placeholder replaced per seed by `cells`):
        experiments x grid x random samples. A sample's name carries its number and values:
        'search #3[lr=0.0012,dropout=0.31]'."""
        out, made_by = [], {}
        if self.search and self.search.method == "tpe":  # search_tpe.py sets each batch's
            draws = list(self.proposals)
        else:
            draws = list(enumerate(sample(self.space, self.samples, self.search.seed), 1)) \
                if self.space else [(1, {})]
        for exp in self.experiments:
            grid = {**self.grid, **exp.grid}
            keys = list(grid)
            for combo in itertools.product(*(grid[k] for k in keys)):
                chosen = dict(zip(keys, combo, strict=True))
                for i, drawn in draws:
                    values = {**self.defaults, **exp.settings, **chosen, **drawn}
                    suffix = ",".join(f"{k}={_short(v)}" for k, v in {**chosen, **drawn}.items())
                    name = exp.name + (f" #{i}" if self.space else "")
                    name = f"{name}[{suffix}]" if suffix else name
                    if name in made_by:  # one run id for two runs: a folder would be replaced
                        raise UserError(
                            f"suite {self.name}: experiments {made_by[name]!r} and {exp.name!r} "
                            f"both make a run named {name!r} (a grid adds its values to a name); "
                            "rename one of them")
                    made_by[name] = exp.name
                    out.append(validate_run({**values, "name": name}, f"experiment {exp.name!r}"))
        return out

    @property
    def samples(self) -> int:
        """Configurations drawn per experiment and grid point (1 without random search)."""
        return self.search.samples if self.search and self.search.samples else 1

    @property
    def prunes(self) -> bool:
        return bool(self.search and self.search.prunes)

    def cells(self) -> list[RunConfig]:
        """Run configs x seeds, in suite order."""
        return [run.model_copy(update={"seed": s}) for run in self.runs() for s in self.seeds]


def _short(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


SUITE_KEYS = ("name", "description", "seeds", "defaults", "experiment", "grid", "search", "space")


def parse_suite(data: dict[str, Any], name: str) -> Suite:
    """Validate a suite's TOML table; raises UserError with the field path on any problem."""
    unknown = sorted(set(data) - set(SUITE_KEYS))
    if unknown:
        raise UserError(f"suite {name}: unknown key {unknown[0]!r}; allowed: {', '.join(SUITE_KEYS)}")
    name = check_name(data.get("name", name), f"suite {name}", "the suite's name")
    description = check_text(data.get("description", ""), f"suite {name}", "description")
    seeds = seed_list(data.get("seeds", 1), f"suite {name}")
    defaults = _table(data.get("defaults", {}), f"suite {name}: defaults")
    _check_keys(defaults, f"suite {name}: defaults")
    grid = _grid(data.get("grid", {}), f"suite {name}: grid")
    search = parse_search(data.get("search"), f"suite {name}: search")
    space = parse_space(data.get("space", {}), f"suite {name}: space", defaults)
    if space and not (search and search.method in ("random", "tpe")):
        raise UserError(f"suite {name}: a [space] is sampled by random search only (or tpe); add "
                        "[search] method = \"random\" and samples = N")
    if search and search.method in ("random", "tpe") and not space:
        raise UserError(f"suite {name}: search: method = \"{search.method}\" needs a [space] of "
                        "distributions, e.g. [space] lr = { log_uniform = [1e-4, 1e-2] }")
    exps = data.get("experiment") if isinstance(data.get("experiment"), list) else [{}]
    if search and search.method == "tpe" and (data.get("grid") or len(exps) > 1
                                               or any(isinstance(e, dict) and e.get("grid") for e in exps)):
        raise UserError(f"suite {name}: search: method = \"tpe\" runs one study: one experiment "
                        "and no grid (sample those settings in [space] instead)")
    raw = data.get("experiment")
    if raw is None and space:  # a search may be all space: one experiment, named after the suite
        raw = [{"name": name}]
    if raw is None:
        raise UserError(f"suite {name}: no experiment to run; add at least one [[experiment]] table "
                        "with a name, e.g. [[experiment]] name = \"2-hidden\" architecture = \"512-256\"")
    if not isinstance(raw, list) or not raw:
        raise UserError(f"suite {name}: 'experiment' must be a non-empty array of tables [[experiment]]")
    experiments, seen = [], set()
    for i, item in enumerate(raw):
        where = f"suite {name}: experiment[{i}]"
        item = _table(item, where)
        exp_name = item.get("name")
        if not isinstance(exp_name, str) or not exp_name.strip():
            raise UserError(f"{where}: every experiment needs a non-empty 'name'")
        check_name(exp_name, where)
        if exp_name in seen:
            raise UserError(f"{where}: experiment name {exp_name!r} is used twice")
        seen.add(exp_name)
        settings = {k: v for k, v in item.items() if k not in ("name", "grid")}
        _check_keys(settings, f"{where} ({exp_name})")
        experiments.append(Experiment(name=exp_name, settings=settings,
                                      grid=_grid(item.get("grid", {}), f"{where}.grid")))
        both = sorted(set(space) & (set(settings) | set(experiments[-1].grid) | set(grid)))
        if both:  # which one wins would be a guess: say so
            raise UserError(f"{where} ({exp_name}): {both[0]!r} is both sampled ([space]) and set "
                            "here or in a grid; remove one of them")
    suite = Suite.model_validate({
        "name": name, "description": description,
        "seeds": seeds, "experiments": experiments, "grid": grid, "defaults": defaults,
        "search": search, "space": space, "_parsed": True})
    check_size(suite)  # before expanding: a million-cell grid is refused at once
    suite.runs()  # validate every run now: nothing starts on a bad suite
    return suite


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a table, got {type(value).__name__}")
    return value


def _check_keys(table: dict[str, Any], where: str) -> None:
    for key in table:
        if key not in RUN_FIELDS or key in ("name",):
            raise UserError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(RUN_FIELDS[1:])}")


def _grid(value: Any, where: str) -> dict[str, list[Any]]:
    table = _table(value, where)
    _check_keys(table, where)
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}.{key} must be a non-empty list of values")
        counts = collections.Counter(json.dumps(v, sort_keys=True) for v in values)
        twice = next((v for v in values if counts[json.dumps(v, sort_keys=True)] > 1), None)
        if twice is not None:  # the same run twice, under one name: a typo
            raise UserError(f"{where}.{key} lists {twice!r} more than once; each value once")
    return table


def builtin_suites() -> dict[str, Path]:
    """Name -> path of each packaged suite."""
    folder = resources.files("mlplab") / "suites"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def load_suite(name_or_path: str) -> Suite:
    """A built-in suite by name, or a TOML file by path."""
    builtin = builtin_suites()
    if name_or_path in builtin:
        path = builtin[name_or_path]
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise UserError(
                f"suite {name_or_path!r} is neither a file nor a built-in suite "
                f"({', '.join(sorted(builtin))})"
            )
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"suite {path}: not valid TOML: {e}") from None
    return parse_suite(data, path.stem)
