"""Datasets from Python: the arrays mlplab trains on, and a look at a dataset before training.

    import mlplab
    x_train, y_train, x_test, y_test, classes = mlplab.datasets.load("mnist")
    mlplab.datasets.load("data/train.csv")          # Kaggle CSV: a test split is held out
    mlplab.datasets.inspect("data/hf-mnist/")       # layout, counts, balance, a sample grid

`name_or_path` is anything `dataset =` accepts in a suite: a registered name (`mnist`,
`fashion-mnist`) or "[LAYOUT:]PATH" (CSV, Parquet, image folders, IDX, .npz; see README
"Your data"). The arrays are exactly those training sees.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Arrays(NamedTuple):
    """A dataset as numpy: images uint8 [N, H, W] (0–255), labels int64 [N], class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]


def load(name_or_path: str, data_dir: str | Path | None = None,
         log: Callable[[str], None] = lambda s: None) -> Arrays:
    """The arrays of a dataset, as training sees them: uint8 images [N, H, W], int64 labels,
    class names. Where the data has no test split, the held-out one (a stratified seventh,
    seed 0). data_dir: a folder with a registered dataset's four IDX files."""
    from . import data

    ds = data.load(str(name_or_path), data_dir, log)
    h, w = ds.shape
    return Arrays(ds.x_train.numpy().reshape(-1, h, w), ds.y_train.numpy(),
                  ds.x_test.numpy().reshape(-1, h, w), ds.y_test.numpy(), ds.classes)


@dataclass
class Inspection:
    """What `inspect` found: printable, a table and a sample grid in Jupyter."""

    name: str
    layout: str
    source: str
    shape: tuple[int, int]
    counts: dict[str, int]
    pixel_range: tuple[int, int]
    classes: tuple[str, ...]
    balance: dict[str, list[int]]
    notes: tuple[str, ...]
    _samples: np.ndarray  # uint8 [classes, per_class, H, W] (blank where a class has fewer)
    _png: bytes | None = field(default=None, repr=False)

    def __str__(self) -> str:
        h, w = self.shape
        lines = [f"dataset   {self.name}", f"layout    {self.layout}  ({self.source})",
                 "splits    " + ", ".join(f"{k} {v:,}" for k, v in self.counts.items()),
                 f"images    {h}×{w} = {h * w} pixels, uint8, values {self.pixel_range[0]}…"
                 f"{self.pixel_range[1]}", f"classes   {len(self.classes)}"]
        width = max(len(c) for c in self.classes)
        for i, c in enumerate(self.classes):
            lines.append(f"  {i:>3} {c:<{width}}  " + "  ".join(
                f"{k} {v[i]:>7,} ({v[i] / max(1, sum(v)):>5.1%})" for k, v in self.balance.items()))
        return "\n".join(lines + [f"note      {n}" for n in self.notes])

    def figure(self) -> Figure:
        """A grid of training samples: one row per class (up to 20), labelled by class name."""
        from matplotlib.figure import Figure

        rows, cols = self._samples.shape[:2]
        h, w = self.shape
        cell = 0.55 * max(1.0, min(3.0, w / max(h, 1)))
        fig = Figure(figsize=(1.6 + cols * cell, 0.4 + rows * 0.55), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for r in range(rows):
            for c in range(cols):
                ax = axes[r][c]
                ax.imshow(self._samples[r, c], cmap="gray", vmin=0, vmax=255, aspect="auto")
                ax.set_xticks([])
                ax.set_yticks([])
            axes[r][0].set_ylabel(self.classes[r], rotation=0, ha="right", va="center",
                                  fontsize=8)
        shown = f" (first {rows} of {len(self.classes)} classes)" if rows < len(self.classes) else ""
        fig.suptitle(f"{self.name}: {cols} training samples per class{shown}", fontsize=9)
        return fig

    def png(self) -> bytes:
        """The sample grid as PNG bytes (drawn once)."""
        if self._png is None:
            buf = io.BytesIO()
            self.figure().savefig(buf, format="png", dpi=100)
            self._png = buf.getvalue()
        return self._png

    def _repr_png_(self) -> bytes:
        return self.png()

    def _repr_html_(self) -> str:
        img = base64.b64encode(self.png()).decode()
        return (f"<pre>{html.escape(str(self))}</pre>"
                f'<img src="data:image/png;base64,{img}" alt="samples per class"/>')


MAX_ROWS = 20


def inspect(name_or_path: str, data_dir: str | Path | None = None, per_class: int = 8,
            log: Callable[[str], None] = lambda s: None) -> Inspection:
    """Look at a dataset as mlplab reads it: layout, splits and counts, image shape, pixel
    range, classes and their balance, notes, and a sample grid (`.figure()`, inline in
    Jupyter). Bad data raises the same one-line UserError a run would."""
    from . import data

    ds = data.load(str(name_or_path), data_dir, log)
    h, w = ds.shape
    ytr, yte = ds.y_train.numpy(), ds.y_test.numpy()
    n = len(ds.classes)
    balance = {"train": np.bincount(ytr, minlength=n).tolist(),
               "test": np.bincount(yte, minlength=n).tolist()}
    x = ds.x_train.numpy()
    samples = np.zeros((min(n, MAX_ROWS), per_class, h, w), np.uint8)
    for c in range(len(samples)):
        idx = np.nonzero(ytr == c)[0][:per_class]
        samples[c, :len(idx)] = x[idx].reshape(-1, h, w)
    lo = int(min(ds.x_train.min(), ds.x_test.min()))
    hi = int(max(ds.x_train.max(), ds.x_test.max()))
    return Inspection(str(name_or_path), ds.layout, ds.source, (h, w),
                      {"train": len(ytr), "test": len(yte)}, (lo, hi), ds.classes, balance,
                      ds.notes, samples)
