"""Reading a dataset that `layouts.locate` found: uint8 images [N, H*W] and int64 labels of
every layout (`read`), each array checked by the pixel convention and the label check
(`pixels.py`) as it is read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import imagefolder, parquet, tables
from .bounded import read_npz
from .errors import UserError
from .idx import read_file as read_idx
from .layouts import ROLES, Found, sidecar_classes
from .pixels import images_2d, to_labels, to_u8


@dataclass
class Raw:
    """A dataset as read, before checks and the held-out split: uint8 images [N, H*W]."""

    layout: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    shape: tuple[int, int]
    classes: tuple[str, ...] | None
    notes: list[str]



def _images(a: np.ndarray, what: str, transposed: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    if len(a) == 0:
        raise UserError(f"{what}: no images (a zero-length array)")
    if transposed:
        if a.ndim != 3:
            raise UserError(f"{what}: EMNIST images must be [N, rows, cols] (got {list(a.shape)})")
        a = a.transpose(0, 2, 1)
    x, shape = images_2d(a, what)
    return np.ascontiguousarray(to_u8(x, what)), shape


def _read_idx(found: Found) -> Raw:
    f, t = found.files, found.layout == "emnist"
    xtr, shape = _images(read_idx(f["train_images"][0]), str(f["train_images"][0]), t)
    labels = read_idx(f["train_labels"][0])
    notes = ["EMNIST: images stored transposed, turned upright"] if t else []
    if labels.ndim == 2 and labels.shape[1] > 1:
        notes.append(f"QMNIST-style labels of {labels.shape[1]} columns: the class is the first")
    ytr = to_labels(labels, str(f["train_labels"][0]), first_column=True)
    xte = yte = None
    if "test_images" in f:
        xte, shape_te = _images(read_idx(f["test_images"][0]), str(f["test_images"][0]), t)
        yte = to_labels(read_idx(f["test_labels"][0]), str(f["test_labels"][0]), first_column=True)
        _same_shape(shape, shape_te, found.root)
    return Raw(found.layout, xtr, ytr, xte, yte, shape, sidecar_classes(found.root), notes)


def _only(path: Path) -> np.ndarray:
    arrays = read_npz(path)
    if "arr_0" in arrays or len(arrays) == 1:
        return arrays.get("arr_0", next(iter(arrays.values()), None))
    raise UserError(f"{path}: expected one array (arr_0), found {', '.join(arrays) or 'none'}")


def _read_npz(found: Found) -> Raw:
    f = found.files
    if "npz" in f:
        path = f["npz"][0]
        z = read_npz(path)
        missing = [k for k in ("x_train", "y_train") if k not in z]
        if missing or (("x_test" in z) != ("y_test" in z)):
            raise UserError(f"{path}: missing array {(missing or ['x_test/y_test'])[0]!r}; an .npz "
                            "needs x_train, y_train (and x_test, y_test)")
        arrays = [z.get(k) for k in ("x_train", "y_train", "x_test", "y_test")]
        names = z.get("classes")
        if names is not None and (names.ndim != 1 or names.dtype.kind not in "US"):
            raise UserError(f"{path}: 'classes' must be a 1-D array of strings")
        classes = tuple(str(n) for n in names) if names is not None else None
        where = [f"{path}[{k}]" for k in ("x_train", "y_train", "x_test", "y_test")]
    else:
        paths = [f[r][0] if r in f else None for r in ROLES]
        arrays = [_only(p) if p else None for p in paths]
        classes, where = None, [str(p) for p in paths]
    xtr, shape = _images(arrays[0], where[0])
    ytr = to_labels(arrays[1], where[1])
    xte = yte = None
    if arrays[2] is not None:
        xte, shape_te = _images(arrays[2], where[2])
        yte = to_labels(arrays[3], where[3])
        _same_shape(shape, shape_te, found.root)
    return Raw("npz", xtr, ytr, xte, yte, shape, classes or sidecar_classes(found.root), [])


def _read_tables(found: Found) -> Raw:
    reader = tables.read_csv if found.layout == "csv" else parquet.read_parquet

    def whole(paths, label, width=None):
        parts = [reader(p, label, width) for p in paths]
        for p, part in zip(paths[1:], parts[1:], strict=True):
            if part.shape != parts[0].shape or (part.y is None) != (parts[0].y is None):
                raise UserError(f"{p}: images of {part.shape[0]}×{part.shape[1]}, {paths[0]} has "
                                f"{parts[0].shape[0]}×{parts[0].shape[1]}: shards must agree")
        y = None if parts[0].y is None else np.concatenate([p.y for p in parts])
        return tables.Part(np.concatenate([p.x for p in parts]), y, parts[0].shape, parts[0].classes)

    train = whole(found.files["train"], "required")
    ytr = to_labels(train.y, str(found.files["train"][0]))
    notes, xte = [], None
    tests = found.files.get("test", [])
    if found.layout == "csv" and tests and not tables.csv_has_labels(tests[0], train.x.shape[1]):
        tests = []  # Kaggle's test.csv: known from its first line, never parsed here
        notes.append(f"{found.files['test'][0].name} has no labels (a Kaggle test file): not used "
                     "here; predict it with `mlplab predict RUN FILE --kaggle`")
    if tests:
        test = whole(tests, "optional", train.x.shape[1])  # a label if one more
        _same_shape(train.shape, test.shape, found.root)
        if test.y is None:
            notes.append(f"{tests[0].name} has no labels: not used here")
        else:
            xte, yte = test.x, to_labels(test.y, str(tests[0]))
    return Raw(found.layout, train.x, ytr, xte, yte if xte is not None else None, train.shape,
               train.classes or sidecar_classes(found.root), notes)


def _read_imagefolder(found: Found) -> Raw:
    xtr, ytr, shape, names = imagefolder.read(found.files["train"][0])
    xte = yte = None
    if "test" in found.files:
        xte, yte, shape_te, _ = imagefolder.read(found.files["test"][0], names)
        _same_shape(shape, shape_te, found.root)
    return Raw("imagefolder", xtr, ytr, xte, yte, shape, names, [])


def _same_shape(a: tuple[int, int], b: tuple[int, int], root: Path) -> None:
    if a != b:
        raise UserError(f"{root}: train images are {a[0]}×{a[1]}, test images {b[0]}×{b[1]}: all "
                        "images of a dataset must have one size")


READERS = {"idx": _read_idx, "emnist": _read_idx, "npz": _read_npz, "csv": _read_tables,
           "parquet": _read_tables, "imagefolder": _read_imagefolder}


def read(found: Found) -> Raw:
    """The dataset `locate` found, read and converted to uint8 images and int64 labels."""
    raw = READERS[found.layout](found)
    raw.notes = found.notes + raw.notes
    return raw
