"""A suite -> groups of same-shape cells -> trained, evaluated and stored runs (in-process)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data as data_mod
from . import store
from .config import RunConfig, Suite
from .evaluate import logits, test_metrics
from .model import StackedMLP, param_counts
from .train import MemberResult, resolve_device, train_group

MAX_GROUP = 64  # members per fused group: bounds memory; more groups run one after another


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


def run_suite(suite: Suite, out: str | Path, device: str = "auto", data_dir: str | None = None,
              progress: Callable[[dict], None] | None = None,
              max_group: int = MAX_GROUP) -> list[dict]:
    """Train every cell of the suite not already finished in OUT; returns results.csv rows for
    all of the suite's cells (finished before or now), in suite order."""
    out = store.prepare_out(out)
    dev = resolve_device(device)
    cells = suite.cells()
    db = store.open_store(out)
    done = store.finished_ids(db)
    todo = [c for c in cells if c.run_id not in done]
    groups = plan(todo, max_group)
    emit = progress or (lambda e: None)
    emit({"event": "suite", "suite": suite.name, "cells": len(cells), "todo": len(todo),
          "groups": len(groups), "device": str(dev),
          "epochs": sum(max(c.epochs for c in g.cfgs) for g in groups)})
    datasets: dict[str, data_mod.Dataset] = {}
    for gi, group in enumerate(groups):
        first = group.cfgs[0]
        if first.dataset not in datasets:
            datasets[first.dataset] = data_mod.load(
                first.dataset, data_dir, log=lambda s: emit({"event": "log", "message": s}))
        ds = datasets[first.dataset]
        splits = data_mod.split(ds, first.validation, first.val_size, first.train_size)
        emit({"event": "group", "index": gi, "groups": len(groups), "label": group.label,
              "members": len(group.cfgs), "epochs": max(c.epochs for c in group.cfgs)})
        results = train_group(list(group.cfgs), splits, dev, progress=emit)
        metrics, galleries = final_metrics(results, splits, len(ds.classes), dev)
        for r, m, g in zip(results, metrics, galleries, strict=True):
            store.commit_run(db, out, r.cfg, r.history, m, r.state, {"errors": g})
            emit({"event": "run", "name": r.cfg.name, "seed": r.cfg.seed, "status": r.status,
                  "test_acc": m["test_acc"]})
    rows = store.rows(db, [c.run_id for c in cells])
    db.close()
    store.write_results(out, rows)
    return rows
