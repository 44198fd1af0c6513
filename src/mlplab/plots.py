"""Figures. Each function takes plain data and returns a matplotlib Figure; `png` gives its PNG
bytes (written atomically by the report, and inlined in the self-contained HTML).

Figures are made with `matplotlib.figure.Figure`, never pyplot: pyplot would pick (and in a
notebook change) the user's backend and keep every figure alive in its global registry. A bare
Figure renders to PNG with Agg when saved, and Jupyter shows it inline when it is returned."""

from __future__ import annotations

import hashlib
import io
import re
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure as _Figure
from matplotlib.ticker import MaxNLocator

from .safetext import printable

if TYPE_CHECKING:
    from .records import Configuration


class Figure(_Figure):
    """A matplotlib Figure that Jupyter shows as a PNG whatever the backend: without pyplot a
    bare Figure has no display of its own (measured: only its text repr reached the notebook)."""

    def _repr_png_(self) -> bytes:
        return png(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> None:
        """Called by IPython first whenever it displays the figure: pyplot's inline backend is
        told it has been shown (see showing.py); the PNG itself comes from the formatters."""
        from .showing import displayed

        displayed(self)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HASHED = re.compile(r"-[0-9a-f]{8}$")
RESERVED = {"overlay"}  # plots/overlay.png is the overlay of every experiment


def slug(name: str) -> str:
    """A file name for a configuration: the name itself when it is short plain ASCII, else an
    ASCII slug of it (at most 48 characters) and 8 hex digits of its sha256 — so names that slug
    alike (non-ASCII ones, 'a b' and 'a_b') never share a file, and none is too long."""
    if _PLAIN_NAME.fullmatch(name) and name.lower() not in RESERVED and not _HASHED.search(name):
        return name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:48].strip("._-") or "experiment"
    return f"{base}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def plain(text: object) -> str:
    """User text as matplotlib shows it literally: every `$` escaped (else `$…$` is math text,
    which fails on arbitrary input), no control characters but line breaks."""
    return "\n".join(printable(line) for line in str(text).split("\n")).replace("$", r"\$")


def band(histories: list[list[dict]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds of one column, up to the shortest history."""
    n = min(len(h) for h in histories)
    arr = np.array([[row[key] for row in h[:n]] for h in histories], dtype=float)
    return arr.mean(0), arr.min(0), arr.max(0)


def _curve(ax, histories, key, color, label):
    mean, lo, hi = band(histories, key)
    epochs = np.arange(1, len(mean) + 1)
    ax.plot(epochs, mean, color=color, label=label, marker="o" if len(mean) < 4 else None,
            markersize=3)  # a curve of one or two epochs is a point or two: make them visible
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    if len(mean) == 1:
        ax.set_xlim(0.5, 1.5)
    if len(histories) > 1:
        ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, linewidth=0)


def loss_plot(name: str, histories: list[list[dict]]) -> Figure:
    """The notebook's plot: train vs validation loss per epoch (mean; seed range shaded)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    _curve(ax, histories, "train_loss", "tab:blue", "train loss")
    _curve(ax, histories, "val_loss", "tab:orange", "validation loss")
    ax.set(title=f"{wrap(name, 60)} (n={len(histories)})", xlabel="epoch", ylabel="cross-entropy loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def wrap(name: str, width: int = 26) -> str:
    """A configuration name on several lines, broken after ',' or before '[' (never at a hyphen,
    so '2-hidden' stays whole and names stay distinguishable; only a word longer than a line is
    cut), as plain text for matplotlib (`plain`)."""
    parts = [p[i:i + width] for p in re.split(r"(?<=,)|(?=\[)|(?<= )", printable(name))
             for i in range(0, max(len(p), 1), width)]
    lines, line = [], ""
    for part in parts:
        if line and len(line) + len(part) > width:
            lines.append(line.rstrip())
            line = ""
        line += part
    return plain("\n".join([*lines, line.rstrip()]))


def curves_grid(by_name: dict[str, list[list[dict]]], cols: int = 4) -> Figure:
    """Small multiples: per configuration a loss panel (train, validation) and, below it, an
    accuracy panel; every loss panel on one y scale, every accuracy panel on another, so the
    configurations compare at a glance. Mean over seeds, the seed range shaded."""
    names = list(by_name)
    cols = max(1, min(cols, len(names)))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(2.9 * cols + 0.6, 4.6 * rows + 0.6), layout="constrained")
    grid = fig.add_gridspec(2 * rows, cols)
    loss_axes, acc_axes = [], []
    for i, name in enumerate(names):
        r, c = divmod(i, cols)
        # axes share their scales from the start, so autoscaling sees every configuration's data
        loss = fig.add_subplot(grid[2 * r, c], sharex=loss_axes[0] if loss_axes else None,
                               sharey=loss_axes[0] if loss_axes else None)
        acc = fig.add_subplot(grid[2 * r + 1, c], sharex=loss, sharey=acc_axes[0] if acc_axes else None)
        for key, color in (("train", "tab:blue"), ("val", "tab:orange")):
            _curve(loss, by_name[name], f"{key}_loss", color, f"{key}")
            _curve(acc, by_name[name], f"{key}_acc", color, f"{key}")
        loss.set_title(f"{wrap(name)}\n(n={len(by_name[name])})", fontsize=8)
        loss.tick_params(labelbottom=False)
        loss_axes.append(loss)
        acc_axes.append(acc)
    for group, label in ((loss_axes, "loss"), (acc_axes, "accuracy")):
        for ax in group:
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            ax.set_ylabel(label, fontsize=8)
    for ax in acc_axes:
        ax.set_xlabel("epoch", fontsize=8)
    handles, labels = loss_axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper right", fontsize=8, ncols=2)
    return fig


def overlay_plot(title: str, by_name: dict[str, list[list[dict]]], key: str = "val_loss") -> Figure:
    """One mean curve per configuration; the legend beside the axes (long names never cover
    curves)."""
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, hs in by_name.items():
        mean, _, _ = band(hs, key)
        ax.plot(np.arange(1, len(mean) + 1), mean, label=wrap(name, 34))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title=plain(title), xlabel="epoch", ylabel=key.replace("_", " "))
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=7)
    return fig


def search_plot(by_name: dict[str, list[list[dict]]], pruned_at: dict[str, int | None],
                rungs: list[int], metric: str = "val_acc", eta: int = 3) -> Figure:
    """Successive halving at a glance: each configuration's mean validation curve over its seeds,
    ending where it was pruned (grey, x), the survivors in colour, the rungs as dashed lines. The
    epoch axis is logarithmic (base eta), so the rungs are evenly spaced; a few far-off
    configurations (a learner that never started) are left below the axis and counted, so that
    they do not squash the race between the others."""
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    means = {name: band(hs, metric)[0] for name, hs in by_name.items()}
    for name, mean in means.items():
        epochs = np.arange(1, len(mean) + 1)
        if pruned_at.get(name):
            ax.plot(epochs, mean, color="0.6", linewidth=0.8, marker="o" if len(mean) == 1 else None,
                    markersize=2)
            ax.plot(epochs[-1:], mean[-1:], "x", color="0.35", markersize=5)
        else:
            ax.plot(epochs, mean, linewidth=1.8, label=wrap(name, 34))
    higher = metric.endswith("acc")
    ends = np.array([m[-1] for m in means.values()])
    every = np.concatenate(list(means.values()))
    best = every.max() if higher else every.min()
    q = np.quantile(ends, 0.2 if higher else 0.8)
    edge = q - 0.25 * (best - q)  # a quarter beyond the 20% worst end points
    off = int(((ends < edge) if higher else (ends > edge)).sum())
    if off:
        worst = ends.min() if higher else ends.max()
        ax.set_ylim(*((edge, best + 0.05 * (best - edge)) if higher else (best - 0.05 * (edge - best), edge)))
        ax.annotate(f"{off} configuration{'s' * (off > 1)} off the axis (worst {worst:.3g})",
                    (0.01, 0.02), xycoords="axes fraction", fontsize=7, color="0.35")
    for i, r in enumerate(rungs):
        ax.axvline(r, color="0.3", linestyle="--", linewidth=0.8)
        ax.annotate(f"rung {i + 1}", (r, 1), xycoords=("data", "axes fraction"), fontsize=7,
                    xytext=(2, -10), textcoords="offset points")
    ax.plot([], [], color="0.6", marker="x", markersize=5, label="pruned (x: where it stopped)")
    last = max(len(m) for m in means.values())
    if rungs and last > 2:
        ax.set_xscale("log", base=eta)
        ticks = sorted({1, *rungs, last})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title=f"{metric.replace('_', ' ')} per configuration (mean over seeds)",
           xlabel="epoch" + (f" (log scale, base {eta})" if rungs and last > 2 else ""),
           ylabel=metric.replace("_", " "))
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=7)
    return fig


def params_plot(table: list[Configuration]) -> Figure:
    """Test accuracy (mean +- std over seeds) against parameter count. Points carry their rank
    number; the legend beside the axes names them (labels on the points overlap)."""
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    for e in table:
        if e.ranked:
            ax.errorbar(e.params, e.mean["test_acc"], yerr=e.std["test_acc"], fmt="o", capsize=3,
                        label=wrap(f"{e.rank}. {e.experiment}", 34))
            ax.annotate(str(e.rank), (e.params, e.mean["test_acc"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    ax.set(xscale="log", xlabel="parameters", ylabel="test accuracy")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside right upper", fontsize=7, title="rank (by validation)",
                   title_fontsize=7)
    return fig


def confusion_plot(cm: list[list[int]], classes: tuple[str, ...], title: str) -> Figure:
    m = np.array(cm)
    fig = Figure(figsize=(5.5, 5.4), layout="constrained")
    ax = fig.subplots()
    ax.imshow(np.log1p(m), cmap="Blues")
    for i in range(len(m)):
        for j in range(len(m)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    classes = [plain(c) for c in classes]
    ax.set(xticks=range(len(m)), yticks=range(len(m)), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="true")
    ax.set_title(wrap(title, 48), fontsize=9)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.tick_params(axis="y", labelsize=7)
    return fig


def gallery_plot(images: np.ndarray, captions: list[str], title: str, cols: int = 9,
                 color: str = "tab:red", shape: tuple[int, ...] = ()) -> Figure:
    """Images [n, H*W] uint8, each with a caption (e.g. 'true → predicted'); `shape` (H, W)
    where the images are not square."""
    n = max(len(images), 1)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(cols * 1.1, rows * 1.3 + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, caption in zip(axes.flat, images, captions, strict=False):
        side = int(round(len(img) ** 0.5))
        ax.imshow(img.reshape(shape if len(shape) == 2 else (side, side)), cmap="gray_r")
        ax.set_title(plain(caption), fontsize=8, color=color)
    fig.suptitle(wrap(title, 90), fontsize=10)
    return fig


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()  # layout: each figure is made with the constrained layout engine
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()
