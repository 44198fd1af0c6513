"""A suite -> groups of same-shape cells -> trained, evaluated and stored runs (in-process)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data as data_mod
from . import halving, store
from .augment import augment
from .checkpoint import Checkpointer
from .checkpoint import remove as remove_checkpoint
from .config import RunConfig
from .evaluate import logits, test_metrics
from .lock import own
from .model import StackedMLP
from .suite import Suite
from .summary import param_counts
from .train import MemberResult, guest, resolve_device, train_group

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


GALLERY = 36  # misclassified test digits kept per run, for the report


def final_metrics(results: list[MemberResult], splits: data_mod.Splits, n_classes: int,
                  device: torch.device) -> tuple[list[dict], list[dict[str, torch.Tensor]]]:
    """Test metrics of each member's final weights (with the summary fields of results.csv),
    and each member's first misclassified test digits (images, labels, predictions)."""
    model = StackedMLP([r.cfg for r in results], device)
    for i, r in enumerate(results):
        model.load_member_state(i, r.state)
    z = logits(model, splits.x_test.to(device)).cpu()
    out, galleries = [], []
    for i, r in enumerate(results):
        pred = z[i].argmax(-1)
        wrong = (pred != splits.y_test).nonzero().flatten()[:GALLERY]
        galleries.append({"images": splits.x_test[wrong].contiguous(),
                          "labels": splits.y_test[wrong].contiguous(), "preds": pred[wrong]})
        chosen = r.history[r.best_epoch - 1] if (
            r.cfg.patience and r.cfg.restore_best and r.best_epoch) else r.history[-1]
        total, trainable, frozen = param_counts(r.cfg)
        out.append({
            "run_id": r.cfg.run_id, "experiment": r.cfg.name, "architecture": "-".join(
                map(str, r.cfg.widths)), "params": total, "trainable_params": trainable,
            "seed": r.cfg.seed, "epochs_run": r.epochs_run, "best_epoch": r.best_epoch,
            "val_loss": chosen["val_loss"], "val_acc": chosen["val_acc"],
            **test_metrics(z[i], splits.y_test, n_classes),
            "train_seconds": round(r.train_seconds, 3), "status": r.status, "device": str(device),
            "group": [m.cfg.run_id for m in results],  # who it trained with: reproduce needs it
        })
    return out, galleries


@dataclass
class Trained:
    """One member's outcome, ready for the store (what a worker sends back to the driver)."""

    cfg: RunConfig
    history: list[dict]
    metrics: dict
    state: dict[str, torch.Tensor]
    extra: dict[str, dict[str, torch.Tensor]]  # more safetensors files for the run folder


_DATASETS: dict[tuple, data_mod.Dataset] = {}  # per process: a worker loads each dataset once


def train_and_evaluate(cfgs: list[RunConfig], device: str = "auto", data_dir: str | None = None,
                       progress: Callable[[dict], None] | None = None,
                       threads: int | None = None,
                       checkpoints: tuple[str, float] | None = None, *,
                       stop_at: int | None = None,
                       prune: dict[str, int] | None = None) -> list[Trained] | halving.Paused:
    """Train one group and evaluate its members: the unit of work, in-process or on a worker.
    threads: torch CPU threads for this call (a cluster run matches the driver's, so that a
    run trains to the same numbers wherever it lands). checkpoints: (folder, seconds between
    them): the group saves its state there and resumes from it. stop_at / prune: successive
    halving (see `train_group`); a group paused at its rung returns `halving.Paused`."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train_and_evaluate(cfgs, resolve_device(device), data_dir, progress, checkpoints,
                                   stop_at, prune)
    finally:
        torch.set_num_threads(before)  # a guest in the caller's process


def _train_and_evaluate(cfgs, dev, data_dir, progress, checkpoints, stop_at=None, prune=None):
    first = cfgs[0]
    ds = dataset(first.dataset, data_dir, progress)
    splits = data_mod.split(ds, first.validation, first.val_size, first.train_size)
    ckpt = None if checkpoints is None else Checkpointer.for_group(
        checkpoints[0], [c.run_id for c in cfgs], checkpoints[1])
    results = train_group(list(cfgs), splits, dev, progress=progress, checkpoint=ckpt,
                          stop_at=stop_at, prune=prune)
    if any(r.status == "running" for r in results):  # paused at a rung: nothing to evaluate yet
        return halving.Paused([(r.cfg.run_id, r.history, r.status) for r in results])
    metrics, galleries = final_metrics(results, splits, len(ds.classes), dev)
    out = []
    for r, m, g in zip(results, metrics, galleries, strict=True):
        extra = {"errors": g}
        if r.cfg.augments:  # what the network saw: for the report's picture
            with guest(torch.device("cpu")):
                torch.manual_seed(r.cfg.seed)
                x = splits.x_train[:12].float().repeat(3, 1) / 255
                seen = augment(x, r.cfg.augmentation)
                extra["augmented"] = {"images": (seen * 255).round().to(torch.uint8),
                                      "labels": splits.y_train[:12].repeat(3)}
        out.append(Trained(r.cfg, r.history, m, r.state, extra))
    return out


def dataset(name: str, data_dir: str | None, progress=None) -> data_mod.Dataset:
    """A dataset, loaded once per process (a worker keeps it for every group it trains)."""
    key = (name, data_dir)
    if key not in _DATASETS:
        log = (lambda s: progress({"event": "log", "message": s})) if progress else (lambda s: None)
        _DATASETS[key] = data_mod.load(name, data_dir, log=log)
    return _DATASETS[key]


def check_data(cfgs: list[RunConfig], data_dir: str | None, progress=None) -> None:
    """Every configuration's dataset loads, and its images and labels fit its architecture."""
    for cfg in {(c.dataset, c.widths, c.name): c for c in cfgs}.values():
        ds = dataset(cfg.dataset, data_dir, progress)
        data_mod.check_fits(ds, cfg.widths, f"experiment {cfg.name!r}")


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
    out = store.prepare_out(out)
    remote = bool(cluster or workers)
    dev = device if remote else str(resolve_device(device))  # a cluster's workers resolve it
    check_data(suite.runs(), data_dir, progress)  # a dataset that does not fit stops us before OUT exists
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


def _run_owned(suite, out, dev, remote, data_dir, progress, max_group, client, threads, ckpt):
    cells = suite.cells()
    db = store.open_store(out)
    done = store.finished_ids(db)
    todo = [c for c in cells if c.run_id not in done]
    groups = plan(todo, max_group)
    emit = progress or (lambda e: None)
    emit({"event": "suite", "suite": suite.name, "cells": len(cells), "todo": len(todo),
          "groups": len(groups), "device": dev if not remote else f"{dev} via Dask",
          "epochs": sum(max(c.epochs for c in g.cfgs) for g in groups),
          "plan": [{"label": g.label, "members": len(g.cfgs), "epochs": max(c.epochs for c in g.cfgs),
                    "cost": float(sum(param_counts(c)[0] * c.epochs for c in g.cfgs))}
                   for g in groups]})
    if suite.prunes and ckpt is None:  # a group pauses at each rung in its checkpoint
        ckpt = (str(out / "checkpoints"), math.inf)

    def execute(todo: list[Group], stop_at: int | None = None, prune: dict | None = None):
        numbered = [(groups.index(g), g) for g in todo]  # a group keeps its number at every rung
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
