"""The unit of work: train one fused group and evaluate its members (`train_and_evaluate`), the
same call in-process (sweep.py) and on a Dask worker (cluster.py); what it sends back (`Trained`,
or `halving.Paused` at a rung); datasets loaded once per process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import bn_honest, layout, precise_bn
from . import data as data_mod
from .augment import augment
from .checkpoint import Checkpointer
from .config import RunConfig
from .errors import UserError
from .evaluate import logits, test_metrics
from .fused import MemberResult
from .group import Group
from .halving import Paused, Rung
from .model import StackedMLP
from .summary import param_counts
from .train import guest, resolve_device, train_group

GALLERY = 36  # misclassified test digits kept per run, for the report


def final_metrics(results: list[MemberResult], splits: data_mod.Splits, n_classes: int,
                  device: torch.device) -> tuple[list[dict], list[dict[str, torch.Tensor]]]:
    """Test metrics of each member's final weights (with the summary fields of results.csv),
    and each member's first misclassified test digits (images, labels, predictions).
    bn_eval = "precise" members get their BatchNorm statistics recomputed first (precise_bn)."""
    precise = precise_bn.apply(results, splits, device)  # their states change: evaluated after
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
            **precise.get(i, {}),  # precise BatchNorm statistics: their validation numbers
            **test_metrics(z[i], splits.y_test, n_classes),
            **bn_honest.fields(r.cfg, int(chosen["epoch"]), len(splits.x_train)),
            "train_seconds": round(r.train_seconds, 3), "status": r.status, "device": str(device),
            "precision_used": model.precision,  # fp32 where bf16 was asked but is not native
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


def train_and_evaluate(cfgs: Group | list[RunConfig], device: str = "auto",
                       data_dir: str | None = None,
                       progress: Callable[[dict], None] | None = None,
                       threads: int | None = None,
                       checkpoints: tuple[str, float] | None = None, *,
                       rung: Rung | None = None) -> list[Trained] | Paused:
    """Train one group and evaluate its members: the unit of work, in-process or on a worker.
    threads: torch CPU threads for this call (a cluster run matches the driver's, so that a
    run trains to the same numbers wherever it lands). checkpoints: (folder, seconds between
    them): the group saves its state there and resumes from it. rung: successive halving (see
    `train_group`); a group paused at its rung returns `Paused`."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train_and_evaluate(Group.of(cfgs), resolve_device(device), data_dir, progress,
                                   checkpoints, rung)
    finally:
        torch.set_num_threads(before)  # a guest in the caller's process


def _train_and_evaluate(group: Group, dev, data_dir, progress, checkpoints, rung):
    shared = group.settings  # what the members share: dataset, validation split, ...
    ds = dataset(shared.dataset, data_dir, progress)
    splits = data_mod.split(ds, shared.validation, shared.val_size, shared.train_size)
    ckpt = None if checkpoints is None else Checkpointer.for_group(
        checkpoints[0], group.run_ids, checkpoints[1])
    results = train_group(group, splits, dev, progress=progress, checkpoint=ckpt, rung=rung)
    if any(r.status == "running" for r in results):  # paused at a rung: nothing to evaluate yet
        return Paused([(r.cfg.run_id, r.history, r.status) for r in results])
    metrics, galleries = final_metrics(results, splits, len(ds.classes), dev)
    for m in metrics:  # what the report, predict and the gallery need to name and draw classes
        m.update(classes=list(ds.classes), image_shape=list(ds.shape))
    out = []
    for r, m, g in zip(results, metrics, galleries, strict=True):
        extra = {layout.ERRORS: g}
        if r.cfg.augments:  # what the network saw: for the report's picture
            with guest(torch.device("cpu")):
                torch.manual_seed(r.cfg.seed)
                x = splits.x_train[:12].float().repeat(3, 1) / 255
                seen = augment(x, r.cfg.augmentation)
                extra[layout.AUGMENTED] = {"images": (seen * 255).round().to(torch.uint8),
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


def check_data(cfgs: list[RunConfig], data_dir: str | None, progress=None) -> dict[str, tuple[int, int]]:
    """Every configuration's dataset loads, its images and labels fit its architecture, and its
    validation split leaves training images. Returns dataset -> (training images, bytes)."""
    sizes = {}
    for cfg in {(c.dataset, c.widths, c.name, c.validation, c.val_size): c for c in cfgs}.values():
        ds = dataset(cfg.dataset, data_dir, progress)
        where = f"experiment {cfg.name!r}"
        data_mod.check_fits(ds, cfg.widths, where)
        if cfg.augments and ds.shape[0] != ds.shape[1]:  # before OUT exists, not mid-training
            raise UserError(f"{where}: augmentation needs square images; {cfg.dataset} has "
                            f"{ds.shape[0]}x{ds.shape[1]}: turn augmentation off for it")
        n = len(ds.x_train)
        if cfg.validation == "split" and cfg.val_size >= n:
            raise UserError(f"{where}: val_size {cfg.val_size:,} must be below the {n:,} training "
                            f"images of {cfg.dataset} (they are split into training and validation)")
        sizes[cfg.dataset] = (n, sum(t.numel() * t.element_size()
                                     for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test)))
    return sizes
