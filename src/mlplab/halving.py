"""Synchronous successive halving over fused groups (the driver's side; the decisions themselves
are `search.decide`).

Every group trains to the next rung and pauses there (its epoch checkpoint holds it); once all
groups have reached the rung, the configurations still in the race are ranked by the mean of the
metric over their seeds, the best ceil(n / eta) go on and the members of the others leave their
groups at that rung (status "pruned", their weights at the rung). The survivors resume from the
checkpoint, never from scratch. The decisions depend only on the members' histories, so they are
the same in-process, on a Dask cluster (groups return in any order), and after kill -9 and a
rerun (the committed runs' histories come from the store, the paused ones from their checkpoints,
and a group whose checkpoint is past a rung just reports its history again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .config import RunConfig
from .search import SearchSpec, config_key, decide, rungs


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
    log = []
    pending = list(groups)
    for rung in [*rungs(max(c.epochs for c in cells), spec.min_epochs, spec.eta), None]:
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
        kept, pruned = decide(rung, seeds, epochs, spec.eta, spec.metric)
        for rid, k in keys.items():
            if k in pruned:
                prune.setdefault(rid, rung)
        entry = {"epoch": rung, "contenders": len(kept) + len(pruned), "kept": [names[k] for k in kept],
                 "pruned": [names[k] for k in pruned]}
        log.append(entry)
        emit({"event": "rung", "metric": spec.metric, **entry})
    yield "search", {"method": spec.method, "eta": spec.eta, "min_epochs": spec.min_epochs,
                     "metric": spec.metric, "rungs": log}
