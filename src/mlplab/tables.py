"""Pixel tables: CSV (plain or gzipped) the way Kaggle ships MNIST-style data; the column
conventions Parquet files share (`parquet.py`).

CSV: an optional header (`label,pixel0…pixel783`, `label,pixel1…pixel784`, `label,1x1…28x28`),
without one the label is the first column; `,` `;` or tab. Parsed by numpy's C reader in blocks
of whole lines, each block turned into uint8 at once (a 42,000-row file never exists as a
float64 frame), with every limit of `bounded.LineStream`.

"""

from __future__ import annotations

import io
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bounded import LineStream, gib, max_bytes, open_maybe_gzip
from .errors import UserError
from .pixels import to_u8

LABEL_NAMES = ("label", "labels", "class")
PIXEL = re.compile(r"pixel_?(\d+)")
GRID = re.compile(r"(\d+)x(\d+)")


@dataclass
class Part:
    """One split as read: uint8 images [N, H*W], labels int-like [N] or None, (H, W), names."""

    x: np.ndarray
    y: np.ndarray | None
    shape: tuple[int, int]
    classes: tuple[str, ...] | None = None


def plan(names: list[str], what: str, label: str,
         width: int | None = None) -> tuple[int | None, np.ndarray, tuple[int, int]]:
    """(label column or None, pixel columns in row-major order, (H, W)) from a header.
    label: 'required' | 'optional' | 'none'."""
    low = [n.strip().strip('"').lower() for n in names]
    li = next((i for i, n in enumerate(low) if n in LABEL_NAMES), None)
    if li is None and label == "required":
        raise UserError(f"{what}: no label column (a column named {' or '.join(LABEL_NAMES)}); "
                        "a file without labels is a test file: predict it with `mlplab predict`")
    rest = [(i, n) for i, n in enumerate(low) if i != li]
    pix = [(i, PIXEL.fullmatch(n)) for i, n in rest]
    grid = [(i, GRID.fullmatch(n)) for i, n in rest]
    if rest and all(m for _, m in pix):
        nums = np.array([int(m.group(1)) for _, m in pix])
        if sorted(nums) != list(range(nums.min(), nums.min() + len(nums))) or nums.min() > 1:
            raise UserError(f"{what}: pixel columns must be numbered pixel0…pixelN-1 or "
                            "pixel1…pixelN, each once")
        order = np.array([i for i, _ in pix])[np.argsort(nums)]
        side = int(round(len(order) ** 0.5))
        shape = (side, side) if side * side == len(order) else (1, len(order))
    elif rest and all(m for _, m in grid):
        rc = np.array([(int(m.group(1)), int(m.group(2))) for _, m in grid])
        h, w = len(set(rc[:, 0])), len(set(rc[:, 1]))
        if h * w != len(rc) or len({tuple(p) for p in rc}) != len(rc):
            raise UserError(f"{what}: pixel columns RxC must cover a full grid (1x1…{h}x{w}), "
                            "each once")
        order = np.array([i for i, _ in grid])[np.lexsort((rc[:, 1], rc[:, 0]))]
        shape = (h, w)
    else:
        bad = next((names[i] for (i, m), (_, g) in zip(pix, grid, strict=True) if not (m or g)),
                   None) if rest else None
        raise UserError(f"{what}: column {bad!r} is neither the label ({', '.join(LABEL_NAMES)}) "
                        "nor a pixel (pixelN or RxC)" if bad else f"{what}: no pixel columns")
    if width is not None and len(order) != width:
        raise UserError(f"{what}: {len(order)} pixel columns; expected {width}")
    return li, order, shape


def _headerless(n: int, what: str, label: str, width: int | None):
    """No header: the label first (training data), or none when the row is exactly the model's
    width (a test file for predict)."""
    has_label = label == "required" or (label == "optional" and width is not None and n == width + 1)
    order = np.arange(1 if has_label else 0, n)
    if width is not None and len(order) != width:
        raise UserError(f"{what}: rows of {n} values; expected {width} pixels "
                        f"({width + 1} with a label first)")
    side = int(round(len(order) ** 0.5))
    return (0 if has_label else None), order, (side, side) if side * side == len(order) else (1, len(order))


def _numeric(text: str) -> bool:
    try:
        float(text.strip().strip('"'))
        return True
    except ValueError:
        return False


def _header(line: bytes) -> tuple[str, list[str]]:
    """(delimiter, fields) of a CSV's first line."""
    head = line.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")
    delim = next((d for d in (",", ";", "\t") if d in head), ",")
    return delim, head.split(delim)


def csv_has_labels(path: Path, width: int) -> bool:
    """Whether a pixel CSV holds labels, from its first line alone: a label column in its
    header, or (without one) rows of width + 1 values."""
    with open_maybe_gzip(path) as f:
        first = next(LineStream(f, str(path)).blocks(1 << 16), b"")
    _, names = _header(first.partition(b"\n")[0])
    if all(_numeric(n) for n in names):
        return len(names) == width + 1
    return any(n.strip().strip('"').lower() in LABEL_NAMES for n in names)


def read_csv(path: Path, label: str = "required", width: int | None = None) -> Part:
    """A pixel CSV (see the module docstring) -> Part; one UserError for anything malformed."""
    what = str(path)
    with open_maybe_gzip(path) as f:
        stream = LineStream(f, what)
        blocks = stream.blocks()
        first = next(blocks, b"")
        line, _, rest = first.partition(b"\n")
        delim, names = _header(line)
        if not line.strip():
            raise UserError(f"{what}: empty; expected a header or rows of label and pixels")
        if all(_numeric(n) for n in names):
            li, order, shape = _headerless(len(names), what, label, width)
            rest, line0 = first, 1
        else:
            li, order, shape = plan(names, what, label, width)
            line0 = 2
        xs, ys, kind, n = [], [], None, 0
        for block in itertools.chain([rest] if rest.strip() else [], blocks):
            a, kind = _parse(block, delim, kind, len(names), what, line0 + n, names)
            if a.size == 0:
                continue
            if (n + len(a)) * len(order) > max_bytes():
                raise UserError(f"{what}: more than {gib(max_bytes())} of pixels, over the limit "
                                "(MLPLAB_MAX_DATA_BYTES)")
            xs.append(checked_pixels(select_columns(a, order), what, line0 + n))
            ys.append(a[:, li].copy() if li is not None else None)  # not a view: frees the block
            n += len(a)
    if n == 0:
        raise UserError(f"{what}: no rows of pixels")
    y = None if li is None else np.concatenate(ys)
    return Part(np.concatenate(xs), y, shape)


def checked_pixels(a: np.ndarray, what: str, line0: int, unit: str = "line") -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 255):  # the error path finds the line
            bad = np.nonzero(((a < 0) | (a > 255)).any(1))[0][0]
            v = a[bad][(a[bad] < 0) | (a[bad] > 255)][0]
            raise UserError(f"{what}: {unit} {line0 + bad}: pixel value {v}; integer pixels must "
                            "be 0–255")
        return a.astype(np.uint8)
    return to_u8(a, what)


def select_columns(a: np.ndarray, order: np.ndarray) -> np.ndarray:
    """a[:, order], as a slice (no copy) where the columns are already in order."""
    if len(order) and (np.diff(order) == 1).all():
        return a[:, order[0]:order[-1] + 1]
    return a[:, order]


def _parse(block: bytes, delim: str, kind, n_fields: int, what: str, line0: int, names):
    """One block of whole lines -> a 2-D array of the file's kind (int32 first, else float64)."""
    for dtype in ((np.int32, np.float64) if kind is None else (kind,)):
        try:
            a = np.loadtxt(io.BytesIO(block), delimiter=delim, dtype=dtype, ndmin=2,
                           quotechar='"', encoding="latin1")
        except (ValueError, OverflowError):
            continue
        if a.size and a.shape[1] != n_fields:
            break
        return a, dtype
    raise UserError(_diagnose(block, delim, n_fields, what, line0, names, kind))


def _diagnose(block: bytes, delim: str, n_fields: int, what: str, line0: int, names, kind) -> str:
    """The first bad line of a block that numpy refused, in words (the error path only)."""
    lines = block.decode("latin1").splitlines()
    skipped = 0
    for i, text in enumerate(lines):
        if not text.strip():
            skipped += 1
            continue
        fields = text.split(delim)
        where = f"{what}: line {line0 + i}"
        if len(fields) != n_fields:
            return f"{where} has {len(fields)} values, expected {n_fields} (as the first line)"
        for j, v in enumerate(fields):
            if not _numeric(v):
                col = names[j].strip() if len(names) > j and not _numeric(names[j]) else f"column {j + 1}"
                return f"{where}, {col}: {v.strip()!r} is not a number"
            if kind is np.int32 and not float(v).is_integer():
                return (f"{where}: {v.strip()!r} is fractional, but the lines before hold whole "
                        "numbers; write every pixel one way (0–255, or floats in [0, 1])")
    return f"{what}: unreadable lines from line {line0} on (values out of range for their type)"
