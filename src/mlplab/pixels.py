"""The one pixel convention and the one label check, for datasets of every layout and for
`predict` alike.

Pixels: integers 0–255 (uint8 or any integer type) are taken as they are; floats must lie in
[0, 1] and become round(x × 255) (to the nearest, ties to even: numpy's rint). Anything else —
floats outside [0, 1] (such as 0–255 stored as float), NaN or inf, booleans, complex numbers,
strings — is one UserError saying which convention to use.

Labels: a vector [N] (an [N, 1] column is squeezed) of whole, finite, non-negative numbers below
MAX_CLASSES; checked before anything (a class list, a one-hot matrix) is built from them.
"""

from __future__ import annotations

import numpy as np

from .bounded import MAX_CLASSES
from .errors import UserError

CONVENTION = "uint8 pixels 0–255 (any integer type) or floats in [0, 1]"


def to_u8(arr: np.ndarray, where: str) -> np.ndarray:
    """Images of any shape under the pixel convention -> uint8 of the same shape."""
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return arr
    if arr.size == 0:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise UserError(f"{where}: integer pixels must be 0–255 (found {lo}…{hi})")
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.floating):
        raise UserError(f"{where}: pixels are {arr.dtype}; expected {CONVENTION}")
    if not np.isfinite(arr).all():
        raise UserError(f"{where}: pixels hold NaN or infinity; expected {CONVENTION}")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 1:
        hint = " (0–255 stored as floats: store uint8, or divide by 255)" if hi <= 255 and lo >= 0 \
            else ""
        raise UserError(f"{where}: float pixels must lie in [0, 1] (found {lo:g}…{hi:g}){hint}")
    return np.rint(arr * 255).astype(np.uint8)


def to_labels(y, where: str, first_column: bool = False) -> np.ndarray:
    """Labels as int64 [N]: [N] or [N, 1] (squeezed); [N, k] only with first_column (QMNIST's
    labels, whose class is the first of its columns). Whole, finite, 0 ≤ y < MAX_CLASSES."""
    y = np.asarray(y)
    if y.ndim == 2 and (y.shape[1] == 1 or (first_column and y.shape[1] >= 1)):
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"{where}: labels have shape {list(y.shape)}; expected one label per "
                        "image, [N] (or [N, 1])")
    if len(y) == 0:
        raise UserError(f"{where}: no labels (a zero-length array)")
    if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer)
                                   or np.issubdtype(y.dtype, np.floating)):
        raise UserError(f"{where}: labels are {y.dtype}; expected whole numbers 0, 1, 2, …")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise UserError(f"{where}: labels hold NaN or infinity; expected whole numbers")
        if (y != np.rint(y)).any():
            bad = y[y != np.rint(y)][0]
            raise UserError(f"{where}: labels must be whole numbers (found {bad:g})")
    lo, hi = y.min(), y.max()
    if lo < 0:
        raise UserError(f"{where}: labels must be non-negative (found {lo:g})")
    if hi >= MAX_CLASSES:
        raise UserError(f"{where}: a label of {hi:g}; at most {MAX_CLASSES} classes "
                        f"(labels 0…{MAX_CLASSES - 1}) are allowed")
    return y.astype(np.int64)


def images_2d(x: np.ndarray, where: str) -> tuple[np.ndarray, tuple[int, int]]:
    """[N, H, W] or [N, P] images -> ([N, H*W], (H, W)); a flat P is square when it can be,
    else (1, P)."""
    x = np.asarray(x)
    if x.ndim == 3:
        return x.reshape(len(x), -1), (x.shape[1], x.shape[2])
    if x.ndim == 2:
        side = int(round(x.shape[1] ** 0.5))
        return x, (side, side) if side * side == x.shape[1] else (1, x.shape[1])
    raise UserError(f"{where}: images have shape {list(x.shape)}; expected [N, H, W] or [N, pixels]")


GRAY_MODES = ("L", "1", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr")


def gray(im, what: str) -> np.ndarray:
    """A Pillow image as uint8 [H, W] grayscale: RGB (and palette, CMYK) by Pillow's "L"
    conversion, the ITU-R 601-2 luma L = 0.299 R + 0.587 G + 0.114 B; alpha is ignored.
    16-bit and float images are refused rather than guessed at."""
    if im.mode not in GRAY_MODES:
        raise UserError(f"{what}: image mode {im.mode} (16-bit or float pixels) is not supported; "
                        "save it as 8-bit grayscale or RGB")
    return np.asarray(im if im.mode == "L" else im.convert("L"), dtype=np.uint8)
