"""Honest small runs: whether a BatchNorm model's moving statistics saw enough updates to be
trusted, and the fix in words. Torch-free (the comparison table and the report read it).

With Keras' convention the moving mean after n updates at momentum m is
m^n * 0 + (1 - m) * sum_i m^(n-i) * batch_mean_i: the starting values (mean 0, variance 1) still
weigh m^n. Above THRESHOLD the evaluated network uses statistics that are partly its
initialisation's, and a short run makes BatchNorm look harmful (issue 23: 48 updates at 0.99
leave 62%).

THRESHOLD = 0.02, measured (bench/bn_updates.toml, README "Small runs and BatchNorm"): on the
notebook's 2-hidden model at 0.99, what the population statistics gain over the moving ones falls
from 15.6 test-accuracy points (10 updates, weight 0.90) to 4.5 (100, 0.37), 1.4 (200, 0.13) and
1.0 (300, 0.049), and reaches a floor of 0.4 at 391 updates (0.020) that stays at 782 and 1,564
(weight ~0): that floor is the moving average's lag behind changing weights, not the starting
values, and warning about it would mean warning about every Keras BatchNorm run. At 0.99 the
threshold takes 390 updates (one epoch of 50,000 images at batch 128), at 0.9 it takes 38.
"""

from __future__ import annotations

import math

THRESHOLD = 0.02
NICER_MOMENTA = (0.9, 0.8, 0.7, 0.5)  # what the fix suggests, the largest that suffices


def start_weight(momentum: float, updates: int) -> float:
    """The weight m^n the starting values (mean 0, variance 1) keep after n updates."""
    return momentum ** max(updates, 0)


def updates_needed(momentum: float) -> int:
    """The fewest updates that bring the starting values' weight to THRESHOLD or below."""
    return math.ceil(math.log(THRESHOLD) / math.log(momentum))


def fields(cfg, epochs_kept: int, n_train: int) -> dict:
    """What a run's metrics record (BatchNorm runs only): the moving statistics' updates in the
    weights that were kept (the best epoch's with restore_best) and the steps per epoch.
    cfg: a RunConfig."""
    if cfg.norm != "batch":
        return {}
    per_epoch = math.ceil(n_train / cfg.batch_size)  # Keras keeps the last, smaller batch
    return {"bn_updates": epochs_kept * per_epoch, "bn_steps_per_epoch": per_epoch}


def warning(cfg: dict, metrics: dict) -> str | None:
    """The fix in words when a run's moving statistics cannot be trusted, else None: runs
    without BatchNorm, evaluated with bn_eval = "precise", or stored before runs recorded their
    updates have none. cfg, metrics: the stored JSON of one run."""
    n = metrics.get("bn_updates")
    if n is None or cfg.get("bn_eval", "keras") == "precise" or not (
            cfg.get("norm") == "batch" or cfg.get("batch_norm")):
        return None
    m = float(cfg.get("bn_momentum", 0.99))
    weight = start_weight(m, n)
    if weight <= THRESHOLD:
        return None
    fixes = ['use bn_eval = "precise"']
    per_epoch = metrics.get("bn_steps_per_epoch")
    if per_epoch:
        fixes.append(f"≥ {math.ceil(updates_needed(m) / per_epoch)} epochs")
    else:
        fixes.append("more epochs")
    lower = next((x for x in NICER_MOMENTA if x < m and start_weight(x, n) <= THRESHOLD), None)
    if lower is not None:
        fixes.append(f"bn_momentum = {lower:g}")
    return (f"BatchNorm's moving statistics saw {n} updates at momentum {m:g} (their starting "
            f"values still weigh {weight:.0%}): {', '.join(fixes[:-1])}, or {fixes[-1]}")
