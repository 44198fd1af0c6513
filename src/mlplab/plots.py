"""Figures from stored run folders: the notebook's train-vs-validation loss plot per experiment
(mean over seeds, with the seed range as a band) and one overlay of every experiment."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import store  # noqa: E402


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "experiment"


def _curves(histories: list[list[dict]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min, max over seeds of one column, up to the shortest history (early stopping)."""
    n = min(len(h) for h in histories)
    arr = np.array([[row[key] for row in h[:n]] for h in histories])
    return arr.mean(0), arr.min(0), arr.max(0)


def experiment_histories(out: Path, rows: list[dict]) -> dict[str, list[list[dict]]]:
    by_exp: dict[str, list[list[dict]]] = {}
    for r in rows:
        run = store.read_run(store.run_dir(out, r["run_id"]))
        if run["history"]:
            by_exp.setdefault(r["experiment"], []).append(run["history"])
    return by_exp


def loss_plots(out: Path, rows: list[dict]) -> list[Path]:
    """OUT/plots/<experiment>.png for each experiment, and OUT/plots/overlay.png."""
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    by_exp = experiment_histories(out, rows)
    paths = []
    for name, hs in by_exp.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, color in (("train_loss", "tab:blue"), ("val_loss", "tab:orange")):
            mean, lo, hi = _curves(hs, key)
            epochs = np.arange(1, len(mean) + 1)
            ax.plot(epochs, mean, color=color, label=key.replace("_", " "))
            if len(hs) > 1:
                ax.fill_between(epochs, lo, hi, color=color, alpha=0.2)
        ax.set(title=f"{name} (n={len(hs)})", xlabel="epoch", ylabel="cross-entropy loss")
        ax.legend()
        ax.grid(alpha=0.3)
        paths.append(_save(fig, folder / f"{slug(name)}.png"))
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, hs in by_exp.items():
        mean, _, _ = _curves(hs, "val_loss")
        ax.plot(np.arange(1, len(mean) + 1), mean, label=name)
    ax.set(title="validation loss, every experiment", xlabel="epoch", ylabel="val loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    paths.append(_save(fig, folder / "overlay.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
