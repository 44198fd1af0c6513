"""Model-based search in batches: Optuna's TPE proposes K configurations, mlplab trains them as
fused groups with successive halving inside the batch, and the outcomes inform the next batch.

    [search]
    method = "tpe"     # needs mlplab[optuna]
    trials = 24        # configurations in all
    batch = 8          # proposed together (constant liar), trained together

Decisions stay a pure function of the histories: batch b's proposals are those of a fresh
TPESampler seeded by (seed, b) over a study rebuilt from the outcomes of batches 0..b-1 as the
store has them (their rounded values, in trial order). So an uninterrupted run, a run resumed
after kill -9 and a run on a Dask cluster ask the same batches: a finished batch is proposed
again identically, found in the store and not retrained. Optuna's pruner is not used: mlplab
decides the rungs (halving.py) and tells Optuna a pruned configuration as PRUNED with its value
at the rung.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import layout, store
from .config import RunConfig
from .errors import UserError
from .halving import budget
from .pruning import METRICS, seed_score
from .search import SearchSpec, _round

MISSING = 'search: method = "tpe" needs Optuna, an optional extra: pip install "mlplab[optuna]"'


def optuna_module():
    """Optuna, or the one line that names the extra (checked before anything is written)."""
    try:
        import optuna
    except ImportError:
        raise UserError(MISSING) from None
    return optuna


def distributions(space: dict[str, dict[str, list]]) -> dict[str, Any]:
    """[space] -> Optuna distributions; a choice is its index (its values may be any TOML value)."""
    d = optuna_module().distributions
    out = {}
    for key, dist in space.items():
        (kind, args), = dist.items()
        out[key] = (d.CategoricalDistribution(list(range(len(args)))) if kind == "choice"
                    else d.IntDistribution(args[0], args[1]) if kind == "int_uniform"
                    else d.FloatDistribution(args[0], args[1], log=kind == "log_uniform"))
    return out


def to_values(params: dict[str, Any], space: dict) -> dict[str, Any]:
    """Optuna's params -> settings, floats rounded as random search rounds them (kept in range)."""
    out = {}
    for key, dist in space.items():
        (kind, args), = dist.items()
        v = params[key]
        out[key] = (args[v] if kind == "choice" else int(v) if kind == "int_uniform"
                    else min(max(_round(v), args[0]), args[1]))
    return out


def to_params(values: dict[str, Any], space: dict) -> dict[str, Any]:
    out = {}
    for key, dist in space.items():
        (kind, args), = dist.items()
        v = values[key]
        out[key] = ([json.dumps(a, sort_keys=True) for a in args].index(json.dumps(v, sort_keys=True))
                    if kind == "choice" else v)
    return out


def batch_seed(seed: int, b: int) -> int:
    return random.Random(f"mlplab:tpe:{seed}:{b}").getrandbits(32)


def propose(space: dict, spec: SearchSpec, b: int, told: list[dict]) -> list[dict[str, Any]]:
    """Batch b's configurations: asked of a study holding `told` (values, state, value, epoch)."""
    optuna = optuna_module()
    dists = distributions(space)
    sampler = optuna.samplers.TPESampler(seed=batch_seed(spec.seed, b), constant_liar=True)
    direction = "maximize" if METRICS[spec.metric] else "minimize"
    level = optuna.logging.get_verbosity()  # "a new study created": each batch's is a rebuild
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction=direction, sampler=sampler)
    finally:
        optuna.logging.set_verbosity(level)
    state = optuna.trial.TrialState
    for t in told:
        kind = state[t["state"]]
        study.add_trial(optuna.trial.create_trial(
            params=to_params(t["values"], space), distributions=dists, state=kind,
            value=t["value"] if kind == state.COMPLETE else None,
            intermediate_values={t["epoch"]: t["value"]} if kind == state.PRUNED else None))
    n = min(spec.batch, spec.trials - b * spec.batch)
    asked = [study.ask(dists) for _ in range(n)]  # the asked ones run: constant liar spreads them
    return [to_values(t.params, space) for t in asked]


def outcome(values: dict, cells: list[RunConfig], found: dict[str, tuple[list[dict], str]],
            metric: str) -> dict:
    """One configuration's result for Optuna: the mean over its seeds at its last epoch (at the
    rung where it was pruned: state PRUNED); FAIL when a seed diverged or never ran."""
    seeds = [found.get(c.run_id, ([], "missing")) for c in cells]
    pruned = all(s == "pruned" for _, s in seeds)
    epoch = max(len(h) for h, _ in seeds) if pruned else max(c.epochs for c in cells)
    value = sum(seed_score(h, s, epoch, metric) for h, s in seeds) / len(seeds)
    state = "FAIL" if not math.isfinite(value) else "PRUNED" if pruned else "COMPLETE"
    return {"values": values, "state": state, "value": value if math.isfinite(value) else None,
            "epoch": epoch}


def run_tpe(suite, out: str | Path, run_batch: Callable[..., list[dict]], **options) -> list[dict]:
    """Every batch in turn through run_batch(suite, out, **options) (sweep.run_suite: finished
    runs are found in the store); OUT/search.json holds each batch's rungs, results.csv every run."""
    optuna_module()  # before anything is written
    spec, emit = suite.search, options.get("progress") or (lambda e: None)
    told: list[dict] = []
    batches, every = [], []
    for b in range(math.ceil(spec.trials / spec.batch)):
        numbered = [(b * spec.batch + i + 1, v) for i, v in enumerate(propose(suite.space, spec, b, told))]
        part = suite.model_copy(update={"proposals": numbered})
        emit({"event": "log", "message": f"tpe: batch {b + 1} of {math.ceil(spec.trials / spec.batch)}: "
                                         f"trials {numbered[0][0]}–{numbered[-1][0]}"})
        run_batch(part, out, **options)
        cells = part.cells()
        every += cells
        db = store.open_store(Path(out))
        try:
            found = {r["run_id"]: (store.history(db, r["run_id"]), r["status"])
                     for r in store.rows(db, [c.run_id for c in cells])}
        finally:
            db.close()
        by_name: dict[str, list[RunConfig]] = {}  # names carry the trial number: one per trial
        for c in cells:
            by_name.setdefault(c.name, []).append(c)
        told += [outcome(v, cs, found, spec.metric)
                 for (_, v), cs in zip(numbered, by_name.values(), strict=True)]
        log = (json.loads(layout.search(out).read_text()) if suite.prunes
               else {"rungs": [], **budget(list(found_rows(out, cells)), cells)})
        batches.append({"batch": b + 1, "trials": [n for n, _ in numbered], **log})
    return _finish(Path(out), spec, batches, every)


def found_rows(out: str | Path, cells: list[RunConfig]) -> list[dict]:
    db = store.open_store(Path(out))
    try:
        return store.rows(db, [c.run_id for c in cells])
    finally:
        db.close()


def _finish(out: Path, spec: SearchSpec, batches: list[dict], cells: list[RunConfig]) -> list[dict]:
    rows = found_rows(out, cells)
    log = {"method": "tpe", "trials": spec.trials, "batch": spec.batch, "seed": spec.seed,
           "eta": spec.eta, "min_epochs": spec.min_epochs, "metric": spec.metric, "rule": spec.rule,
           "alpha": spec.alpha,
           "rungs": [{**r, "batch": b["batch"]} for b in batches for r in b["rungs"]],
           "batches": [{k: b[k] for k in ("batch", "trials", "rungs", "model_epochs")} for b in batches],
           **budget(rows, cells)}
    store.write_text_atomic(layout.search(out), json.dumps(log, indent=2))
    store.write_results(out, rows)
    return rows
