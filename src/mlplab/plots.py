"""Figures. Each function takes plain data and returns a matplotlib Figure; `save` writes a PNG
atomically and `png` gives its bytes (for the self-contained HTML report).

Figures are made with `matplotlib.figure.Figure`, never pyplot: pyplot would pick (and in a
notebook change) the user's backend and keep every figure alive in its global registry. A bare
Figure renders to PNG with Agg when saved, and Jupyter shows it inline when it is returned."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "experiment"


def band(histories: list[list[dict]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds of one column, up to the shortest history."""
    n = min(len(h) for h in histories)
    arr = np.array([[row[key] for row in h[:n]] for h in histories], dtype=float)
    return arr.mean(0), arr.min(0), arr.max(0)


def _curve(ax, histories, key, color, label):
    mean, lo, hi = band(histories, key)
    epochs = np.arange(1, len(mean) + 1)
    ax.plot(epochs, mean, color=color, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    if len(histories) > 1:
        ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, linewidth=0)


def loss_plot(name: str, histories: list[list[dict]]) -> Figure:
    """The notebook's plot: train vs validation loss per epoch (mean; seed range shaded)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    _curve(ax, histories, "train_loss", "tab:blue", "train loss")
    _curve(ax, histories, "val_loss", "tab:orange", "validation loss")
    ax.set(title=f"{name} (n={len(histories)})", xlabel="epoch", ylabel="cross-entropy loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def curves_plot(name: str, histories: list[list[dict]]) -> Figure:
    """Loss and accuracy, train and validation, mean over seeds with the seed range as a band."""
    fig = Figure(figsize=(10, 3.6))
    a, b = fig.subplots(1, 2)
    for key, color in (("train", "tab:blue"), ("val", "tab:orange")):
        _curve(a, histories, f"{key}_loss", color, f"{key} loss")
        _curve(b, histories, f"{key}_acc", color, f"{key} accuracy")
    a.set(xlabel="epoch", ylabel="loss")
    b.set(xlabel="epoch", ylabel="accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{name}  (n={len(histories)} seeds)")
    return fig


def overlay_plot(title: str, by_name: dict[str, list[list[dict]]], key: str = "val_loss") -> Figure:
    """One mean curve per configuration."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for name, hs in by_name.items():
        mean, _, _ = band(hs, key)
        ax.plot(np.arange(1, len(mean) + 1), mean, label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title=title, xlabel="epoch", ylabel=key.replace("_", " "))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def params_plot(table: list[dict]) -> Figure:
    """Test accuracy (mean +- std over seeds) against parameter count."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for r in table:
        if r["ranked"]:
            ax.errorbar(r["params"], r["test_acc"], yerr=r["test_acc_std"], fmt="o", capsize=3)
            ax.annotate(r["experiment"], (r["params"], r["test_acc"]), fontsize=6,
                        xytext=(4, 2), textcoords="offset points")
    ax.set(xscale="log", xlabel="parameters", ylabel="test accuracy",
           title="accuracy vs size (error bars: std over seeds)")
    ax.grid(alpha=0.3)
    return fig


def confusion_plot(cm: list[list[int]], classes: tuple[str, ...], title: str) -> Figure:
    m = np.array(cm)
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.imshow(np.log1p(m), cmap="Blues")
    for i in range(len(m)):
        for j in range(len(m)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set(xticks=range(len(m)), yticks=range(len(m)), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="true", title=title)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.tick_params(axis="y", labelsize=7)
    return fig


def gallery_plot(images: np.ndarray, captions: list[str], title: str, cols: int = 9,
                 color: str = "tab:red") -> Figure:
    """Digits [n, 784] uint8, each with a caption (e.g. 'true → predicted')."""
    n = max(len(images), 1)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(cols * 1.1, rows * 1.3))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, caption in zip(axes.flat, images, captions, strict=False):
        side = int(round(len(img) ** 0.5))
        ax.imshow(img.reshape(side, side), cmap="gray_r")
        ax.set_title(caption, fontsize=8, color=color)
    fig.suptitle(title, fontsize=10)
    return fig


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def save(fig: Figure, path: Path) -> Path:
    """Write fig as PNG via a temporary file (never a half-written image)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(png(fig))
    tmp.replace(path)
    return path
