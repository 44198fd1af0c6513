"""Comparison tables from stored results: one row per experiment, mean +- std over seeds."""

from __future__ import annotations

import statistics
from pathlib import Path

from . import store


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [float(v) for v in values]
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def comparison(rows: list[dict]) -> list[dict]:
    """Group results.csv rows by experiment (suite order kept): n, params, epochs and
    mean/std of val and test metrics. Diverged runs are counted but left out of the means."""
    by_exp: dict[str, list[dict]] = {}
    for r in rows:
        by_exp.setdefault(r["experiment"], []).append(r)
    table = []
    for name, rs in by_exp.items():
        ok = [r for r in rs if r["status"] == "finished"] or rs
        entry = {"experiment": name, "architecture": rs[0]["architecture"],
                 "params": int(rs[0]["params"]), "n": len(rs),
                 "diverged": sum(r["status"] == "diverged" for r in rs),
                 "epochs": statistics.fmean(float(r["epochs_run"]) for r in ok)}
        for key in ("val_loss", "val_acc", "test_loss", "test_acc", "train_seconds"):
            entry[key], entry[f"{key}_std"] = _mean_std([r[key] for r in ok])
        table.append(entry)
    return table


def fmt(mean: float, std: float, n: int, digits: int = 4) -> str:
    """'0.9843' for one seed, '0.9843 ± 0.0012' for several."""
    return f"{mean:.{digits}f}" if n <= 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def load_rows(out: Path) -> list[dict]:
    """results.csv rows of every finished run folder in OUT (for reports on old results)."""
    folders = sorted((out / "runs").glob("*/metrics.json"))
    return [store.result_row(f.parent) for f in folders]
