"""A suite -> groups of same-shape cells -> trained, evaluated and stored runs (in-process)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch

from . import layout, store
from .checkpoint import remove as remove_checkpoint
from .config import RunConfig
from .group import MAX_GROUP, Group, plan
from .halving import Halving, Paused, Rung, budget  # noqa: F401  (budget re-exported)
from .inputs import check_run_options
from .lock import own
from .memory import check_fits
from .search_tpe import run_tpe
from .suite import Suite
from .summary import param_counts
from .train import resolve_device
from .work import Trained, check_data, train_and_evaluate  # noqa: F401  (re-exported)

CHECKPOINT_EVERY = 60.0  # seconds between a group's epoch checkpoints


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
        # batch after batch, each one call of this function
        return run_tpe(suite, out, run_suite, device=device, data_dir=data_dir, progress=progress,
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
            ckpt = None if checkpoint_every is None else (str(layout.checkpoints(out)), checkpoint_every)
            return _run_owned(suite, out, dev, remote, data_dir, progress, max_group, client, threads,
                              ckpt)
    finally:
        if client is not None:
            from .cluster import disconnect

            disconnect(client, local)


def _all_stored(out: Path, cells: list[RunConfig]) -> bool:
    """Whether every cell is in OUT's store already (read-only: nothing is written here)."""
    if not layout.db(out).is_file():
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
          "epochs": sum(g.epochs for g in groups),
          "plan": [{"label": g.label, "members": len(g.cfgs), "epochs": g.epochs,
                    "cost": float(sum(param_counts(c)[0] * c.epochs for c in g.cfgs))}
                   for g in groups]})
    if suite.prunes and ckpt is None:  # a group pauses at each rung in its checkpoint
        ckpt = (str(layout.checkpoints(out)), math.inf)

    number = {id(g): i for i, g in enumerate(groups)}  # a group keeps its number at every rung

    def execute(todo: list[Group], rung: Rung):
        numbered = [(number[id(g)], g) for g in todo]
        if remote:
            from .cluster import run_groups

            return run_groups(numbered, dev, data_dir, client=client, progress=emit,
                              checkpoints=ckpt, threads=threads or torch.get_num_threads(),
                              rung=rung, total=len(groups))
        return _in_process(numbered, len(groups), dev, data_dir, emit, ckpt, rung)

    search = None
    if suite.prunes:
        known = {r["run_id"]: (store.history(db, r["run_id"]), r["status"])
                 for r in store.rows(db, [c.run_id for c in cells])}
        search = Halving(groups, cells, suite.search, known, execute, emit)
    for _, trained in search if search else execute(groups, Rung()):
        for t in trained:
            store.commit_run(db, out, t.cfg, t.history, t.metrics, t.state, t.extra)
            emit({"event": "run", "name": t.cfg.name, "seed": t.cfg.seed,
                  "status": t.metrics["status"], "test_acc": t.metrics["test_acc"]})
        if ckpt:  # committed: the group's checkpoint has served
            remove_checkpoint(ckpt[0], [t.cfg.run_id for t in trained])
    if search:  # the rungs' decisions, for the report and the user
        _write_search(out, search.log(), cells, db)
    rows = store.rows(db, [c.run_id for c in cells])
    db.close()
    store.write_results(out, rows)
    return rows


def _write_search(out: Path, log: dict, cells: list[RunConfig], db) -> None:
    """OUT/search.json: the rungs (epoch, kept, pruned) and the compute spent."""
    log = {**log, **budget(store.rows(db, [c.run_id for c in cells]), cells)}
    store.write_text_atomic(layout.search(out), json.dumps(log, indent=2))


def _in_process(numbered: list[tuple[int, Group]], total: int, device: str, data_dir: str | None,
                emit, ckpt, rung: Rung):
    """Train (plan index, group) pairs one after another; yield (group, outcome)."""
    for gi, group in numbered:
        emit({"event": "group", "index": gi, "groups": total, "label": group.label,
              "members": len(group.cfgs), "epochs": group.epochs})
        outcome = train_and_evaluate(group, device, data_dir, emit, checkpoints=ckpt, rung=rung)
        if not isinstance(outcome, Paused):
            emit({"event": "group_done", "index": gi, "groups": total, "label": group.label,
                  "epochs": group.epochs})
        yield group, outcome
