"""Synchronous successive halving over fused groups (the driver's side; the decisions themselves
are `pruning.decide`).

Every group trains to the next rung and pauses there (its epoch checkpoint holds it); once all
groups have reached the rung, the configurations still in the race are ranked by the mean of the
metric over their seeds, the best ceil(n / eta) go on (and with rule "noise" those within seed
noise of the last of them, and at the first rung the best with each value of each setting:
pruning.py), and the members of the others leave their groups at that rung (status "pruned",
their weights at the rung). The survivors resume from the checkpoint, never from scratch. The
decisions depend only on the members' histories, so they are the same in-process, on a Dask
cluster (groups return in any order), and after kill -9 and a rerun (the committed runs'
histories come from the store, the paused ones from their checkpoints, and a group whose
checkpoint is past a rung just reports its history again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .config import RunConfig
from .pruning import Rung, decide, rungs
from .search import SearchSpec, config_key


@dataclass
class Paused:
    """A group stopped at a rung: (run id, history, status) of each member."""

    members: list[tuple[str, list[dict], str]]


# execute(groups, stop_at, prune) -> (group, list of Trained | Paused) as each group returns
Execute = Callable[[list, int | None, dict[str, int]], Iterable[tuple[object, object]]]


def run(groups: list, cells: list[RunConfig], spec: SearchSpec, known: dict[str, tuple[list[dict], str]],
        execute: Execute, emit: Callable[[dict], None]) -> Iterator[tuple[object, list]]:
    """Train `groups` rung by rung; yields (group, list of Trained) as groups finish (the caller
    commits them), and finally ("search", the log of the rungs: what was kept and pruned).

    cells: every cell of the suite (decisions rank them all, trained now or earlier); known: run id
    -> (history, status) of cells committed before this call."""
    keys = {c.run_id: config_key(c.model_dump(mode="json")) for c in cells}
    names = {keys[c.run_id]: c.name for c in cells}
    epochs = {keys[c.run_id]: c.epochs for c in cells}
    state = {rid: v for rid, v in known.items() if rid in keys}
    prune: dict[str, int] = {}
    log: list[dict] = []
    warning = no_rung_warning(cells, spec)
    if warning:
        emit({"event": "log", "message": warning})
    pending = list(groups)
    ladder = rungs(max(c.epochs for c in cells), spec.min_epochs, spec.eta)
    for rung in [*ladder, None]:
        paused = []
        for group, outcome in execute(pending, rung, dict(prune)) if pending else ():
            if isinstance(outcome, Paused):
                state.update({rid: (h, s) for rid, h, s in outcome.members})
                paused.append(group)
            else:
                state.update({t.cfg.run_id: (t.history, t.metrics["status"]) for t in outcome})
                yield group, outcome
        pending = paused
        if rung is None:
            break
        seeds: dict[str, list] = {}
        for c in cells:
            if c.run_id in state:
                seeds.setdefault(keys[c.run_id], []).append(state[c.run_id])
        decision = decide(rung, seeds, epochs, spec.eta, spec.metric, spec.rule, spec.alpha,
                          first=rung == ladder[0])
        for rid, k in keys.items():
            if k in decision.pruned:
                prune.setdefault(rid, rung)
        entry = rung_entry(decision, names)
        log.append(entry)
        emit({"event": "rung", "metric": spec.metric, **entry})
        emit({"event": "log", "message": entry["why"]})
    yield "search", {"method": spec.method, "eta": spec.eta, "min_epochs": spec.min_epochs,
                     "metric": spec.metric, "rule": spec.rule, "alpha": spec.alpha, "rungs": log}


def rung_entry(d: Rung, names: dict[str, str]) -> dict:
    """A rung as search.json and the log have it: names best first, why, the noise estimate."""
    return {"epoch": d.epoch, "contenders": len(d.kept) + len(d.pruned),
            "kept": [names[k] for k in d.kept], "pruned": [names[k] for k in d.pruned],
            "best": d.best, "within_noise": [names[k] for k in d.within_noise],
            "choices": {names[k]: label for k, label in d.choices.items()},
            "seed_sd": d.sd, "margin": d.margin, "why": d.why()}


def no_rung_warning(cells: list[RunConfig], spec: SearchSpec) -> str | None:
    """One line when min_epochs leaves no rung below every run's epochs: nothing is pruned."""
    longest = max(c.epochs for c in cells)
    if rungs(longest, spec.min_epochs, spec.eta):
        return None
    return (f"search: min_epochs = {spec.min_epochs} is not below any run's epochs (the longest "
            f"has {longest}): no rung, nothing is pruned; set min_epochs below {longest}")
