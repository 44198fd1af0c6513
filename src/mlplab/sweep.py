"""A suite -> groups of same-shape cells -> trained, evaluated and stored runs (in-process)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import halving, store
from .checkpoint import remove as remove_checkpoint
from .config import RunConfig
from .inputs import check_run_options
from .lock import own
from .memory import check_fits
from .suite import Suite
from .summary import param_counts
from .train import resolve_device
from .work import Trained, check_data, train_and_evaluate  # noqa: F401  (re-exported)

MAX_GROUP = 64  # members per fused group: bounds memory; more groups run one after another
CHECKPOINT_EVERY = 60.0  # seconds between a group's epoch checkpoints


@dataclass(frozen=True)
class Group:
    cfgs: tuple[RunConfig, ...]

    @property
    def label(self) -> str:
        names = list(dict.fromkeys(c.name for c in self.cfgs))
        return f"{self.cfgs[0].architecture} x{len(self.cfgs)}: " + ", ".join(names)


def plan(cells: list[RunConfig], max_group: int = MAX_GROUP) -> list[Group]:
    """Group cells by shape key (first-seen order), each group at most max_group members."""
    by_key: dict[tuple, list[RunConfig]] = {}
    for c in cells:
        by_key.setdefault(c.group_key(), []).append(c)
    return [Group(tuple(cs[i:i + max_group])) for cs in by_key.values()
            for i in range(0, len(cs), max_group)]


def run_suite(suite: Suite, out: str | Path, device: str = "auto", data_dir: str | None = None,
              progress: Callable[[dict], None] | None = None, max_group: int = MAX_GROUP,
              cluster: str | None = None, workers: int | None = None,
              threads: int | None = None, security=None,
              checkpoint_every: float | None = CHECKPOINT_EVERY) -> list[dict]:
    """Train every cell of the suite not already finished in OUT, in-process or on a Dask
    cluster (`cluster` = scheduler address, or `workers` = local worker processes); returns
    results.csv rows for all of the suite's cells (finished before or now), in suite order.
    Either way this process is the store's only writer and commits each group as it finishes.
    checkpoint_every: seconds between a group's epoch checkpoints in OUT/checkpoints (0: every
    epoch, None: none); an interrupted group resumes from its last one."""
    if suite.search and suite.search.method == "tpe" and not suite.proposals:
        from .search_tpe import run_tpe  # batch after batch, each one call of this function

        return run_tpe(suite, out, device=device, data_dir=data_dir, progress=progress,
                       max_group=max_group, cluster=cluster, workers=workers, threads=threads,
                       security=security, checkpoint_every=checkpoint_every)
    check_run_options(device, workers, cluster, checkpoint_every, data_dir)
    out = store.prepare_out(out)
    # every run in OUT already: no data to load, no memory to check, no cluster to reach
    stored = _all_stored(out, suite.cells())
    remote = bool(cluster or workers) and not stored
    dev = device if remote else str(resolve_device(device))  # a cluster's workers resolve it
    # before OUT exists: a dataset that does not fit, a group that cannot fit in memory
    sizes = {} if stored else check_data(suite.runs(), data_dir, progress)
    if not cluster and not stored:  # a remote cluster's memory is its own; local workers share ours
        local_dev = dev if not workers else str(resolve_device(device))
        check_fits([list(g.cfgs) for g in plan(suite.cells(), max_group)],
                   {d: n for d, (n, _) in sizes.items()}, local_dev, workers or 1,
                   sum(b for _, b in sizes.values()) * (local_dev == "cuda"))
    client = local = None
    if remote:  # an unreachable scheduler, too, stops us before OUT exists
        from .cluster import connect

        client, local = connect(cluster, workers, security, progress or (lambda e: None))
    try:
        with own(out):  # one owner per results folder, for the whole run
            ckpt = None if checkpoint_every is None else (str(out / "checkpoints"), checkpoint_every)
            return _run_owned(suite, out, dev, remote, data_dir, progress, max_group, client, threads,
                              ckpt)
    finally:
        if client is not None:
            from .cluster import disconnect

            disconnect(client, local)


def _all_stored(out: Path, cells: list[RunConfig]) -> bool:
    """Whether every cell is in OUT's store already (read-only: nothing is written here)."""
    if not (out / "mlplab.db").is_file():
        return False
    db = store.read_db(out)
    try:
        done = store.finished_ids(db)
    finally:
        db.close()
    return all(c.run_id in done for c in cells)


def _run_owned(suite, out, dev, remote, data_dir, progress, max_group, client, threads, ckpt):
    cells = suite.cells()
    db = store.open_store(out)
    done = store.finished_ids(db)
    todo = [c for c in cells if c.run_id not in done]
    groups = plan(todo, max_group)
    emit = progress or (lambda e: None)
    emit({"event": "suite", "suite": suite.name, "cells": len(cells), "todo": len(todo), "out": str(out),
          "groups": len(groups), "device": dev if not remote else f"{dev} via Dask",
          "epochs": sum(max(c.epochs for c in g.cfgs) for g in groups),
          "plan": [{"label": g.label, "members": len(g.cfgs), "epochs": max(c.epochs for c in g.cfgs),
                    "cost": float(sum(param_counts(c)[0] * c.epochs for c in g.cfgs))}
                   for g in groups]})
    if suite.prunes and ckpt is None:  # a group pauses at each rung in its checkpoint
        ckpt = (str(out / "checkpoints"), math.inf)

    number = {id(g): i for i, g in enumerate(groups)}  # a group keeps its number at every rung

    def execute(todo: list[Group], stop_at: int | None = None, prune: dict | None = None):
        numbered = [(number[id(g)], g) for g in todo]
        if remote:
            from .cluster import run_groups

            return run_groups(numbered, dev, data_dir, client=client, progress=emit,
                              checkpoints=ckpt, threads=threads or torch.get_num_threads(),
                              stop_at=stop_at, prune=prune, total=len(groups))
        return _in_process(numbered, len(groups), dev, data_dir, emit, ckpt, stop_at, prune)

    if suite.prunes:
        known = {r["run_id"]: (store.history(db, r["run_id"]), r["status"])
                 for r in store.rows(db, [c.run_id for c in cells])}
        finished = halving.run(groups, cells, suite.search, known, execute, emit)
    else:
        finished = execute(groups)
    for group, trained in finished:
        if group == "search":  # the rungs' decisions, for the report and the user
            _write_search(out, trained, cells, db)
            continue
        for t in trained:
            store.commit_run(db, out, t.cfg, t.history, t.metrics, t.state, t.extra)
            emit({"event": "run", "name": t.cfg.name, "seed": t.cfg.seed,
                  "status": t.metrics["status"], "test_acc": t.metrics["test_acc"]})
        if ckpt:  # committed: the group's checkpoint has served
            remove_checkpoint(ckpt[0], [t.cfg.run_id for t in trained])
    rows = store.rows(db, [c.run_id for c in cells])
    db.close()
    store.write_results(out, rows)
    return rows


def budget(rows: list[dict], cells: list[RunConfig]) -> dict:
    """Model-epochs spent on these runs, and what training every cell to its end would take."""
    spent = sum(int(r["epochs_run"]) for r in rows)
    return {"model_epochs": spent, "full_grid_model_epochs": sum(c.epochs for c in cells)}


def _write_search(out: Path, log: dict, cells: list[RunConfig], db) -> None:
    """OUT/search.json: the rungs (epoch, kept, pruned) and the compute spent."""
    log = {**log, **budget(store.rows(db, [c.run_id for c in cells]), cells)}
    store.write_text_atomic(out / "search.json", json.dumps(log, indent=2))


def _in_process(numbered: list[tuple[int, Group]], total: int, device: str, data_dir: str | None,
                emit, ckpt, stop_at: int | None = None, prune: dict | None = None):
    """Train (plan index, group) pairs one after another; yield (group, outcome)."""
    for gi, group in numbered:
        emit({"event": "group", "index": gi, "groups": total, "label": group.label,
              "members": len(group.cfgs), "epochs": max(c.epochs for c in group.cfgs)})
        outcome = train_and_evaluate(list(group.cfgs), device, data_dir, emit, checkpoints=ckpt,
                                     stop_at=stop_at, prune=prune)
        if not isinstance(outcome, halving.Paused):
            emit({"event": "group_done", "index": gi, "groups": total, "label": group.label,
                  "epochs": max(c.epochs for c in group.cfgs)})
        yield group, outcome
