"""Parquet files (needs pyarrow: `pip install 'mlplab[parquet]'`), the way Hugging Face ships
MNIST-style data: an image column (its struct {bytes, path} holding PNG bytes, or plain binary)
and a label column, or pixel columns named as in a CSV (`tables.py`). Class names come from
Hugging Face's ClassLabel metadata when present. The uncompressed size in the file's metadata is
checked before anything is read, and every image's size before it is decoded."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .bounded import MAX_DATA_PIXELS, gib, max_bytes, open_image
from .errors import UserError
from .pixels import gray
from .tables import GRID, LABEL_NAMES, PIXEL, Part, checked_pixels, plan, select_columns

IMAGE_NAMES = ("image", "img", "images", "pixels")


def _pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("reading Parquet needs pyarrow: pip install 'mlplab[parquet]'") from None
    return pq


def _hf_classes(schema, label_col: str) -> tuple[str, ...] | None:
    """Class names from Hugging Face's metadata (a ClassLabel feature), if the file has them."""
    try:
        meta = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
        feat = meta.get("info", {}).get("features", {}).get(label_col, {})
        names = feat.get("names")
        return tuple(str(n) for n in names) if isinstance(names, list) and names else None
    except (ValueError, AttributeError, TypeError):
        return None


def read_parquet(path: Path, label: str = "required", width: int | None = None) -> Part:
    """A Parquet file of PNG images (or pixel columns) and labels -> Part."""
    pq = _pyarrow()
    what = str(path)
    try:
        f = pq.ParquetFile(path)
        md = f.metadata
        size = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    except Exception as e:  # pyarrow raises its own error types (ArrowInvalid, OSError, ...)
        raise UserError(f"{what}: not a readable Parquet file ({e})") from None
    if size > max_bytes():
        raise UserError(f"{what}: {gib(size)} uncompressed, over the {gib(max_bytes())} limit "
                        "(MLPLAB_MAX_DATA_BYTES)")
    schema = f.schema_arrow
    names = list(schema.names)
    low = [n.lower() for n in names]
    label_col = next((names[i] for i, n in enumerate(low) if n in LABEL_NAMES), None)
    image_col = next((names[i] for i, n in enumerate(low) if n in IMAGE_NAMES), None)
    if image_col is None:
        if not any(PIXEL.fullmatch(n) or GRID.fullmatch(n) for n in low):
            raise UserError(f"{what}: no image column ({', '.join(IMAGE_NAMES)}: PNG bytes) and no "
                            "pixel columns (pixelN or RxC)")
        return _pixel_table(f, names, what, label, width)
    if label_col is None and label == "required":
        raise UserError(f"{what}: no label column (a column named {' or '.join(LABEL_NAMES)})")
    cols = [image_col] + ([label_col] if label_col else [])
    xs, ys, shape, n = [], [], None, 0
    for batch in f.iter_batches(batch_size=2048, columns=cols):
        for cell in batch.column(0).to_pylist():
            png = cell.get("bytes") if isinstance(cell, dict) else cell
            if not isinstance(png, bytes | bytearray):
                raise UserError(f"{what}: row {n}: the {image_col} column holds no image bytes")
            im = gray(open_image(io.BytesIO(png), f"{what} row {n}", MAX_DATA_PIXELS), f"{what} row {n}")
            if shape is None:
                shape = im.shape
                if md.num_rows * im.size > max_bytes():
                    raise UserError(f"{what}: {md.num_rows:,} images of {im.shape[0]}×{im.shape[1]} "
                                    f"exceed the {gib(max_bytes())} limit (MLPLAB_MAX_DATA_BYTES)")
            elif im.shape != shape:
                raise UserError(f"{what}: row {n} is {im.shape[0]}×{im.shape[1]}, row 0 is "
                                f"{shape[0]}×{shape[1]}: all images of a dataset must have one size")
            xs.append(im.reshape(-1))
            n += 1
        if label_col:
            ys.append(batch.column(1).to_numpy(zero_copy_only=False))
    if n == 0:
        raise UserError(f"{what}: no rows")
    if width is not None and shape[0] * shape[1] != width:
        raise UserError(f"{what}: images of {shape[0]}×{shape[1]} pixels; expected {width}")
    return Part(np.stack(xs), np.concatenate(ys) if ys else None, tuple(shape),
                _hf_classes(schema, label_col) if label_col else None)


def _pixel_table(f, names, what: str, label: str, width: int | None) -> Part:
    li, order, shape = plan(names, what, label, width)
    xs, ys, n = [], [], 0
    for batch in f.iter_batches(batch_size=8192):
        try:
            a = np.column_stack([c.to_numpy(zero_copy_only=False) for c in batch.columns])
        except Exception as e:  # noqa: BLE001  (pyarrow's own types)
            raise UserError(f"{what}: columns that are not numbers ({e})") from None
        if not np.issubdtype(a.dtype, np.number):
            raise UserError(f"{what}: pixel columns must hold numbers (found {a.dtype})")
        xs.append(checked_pixels(select_columns(a, order), what, n, "row"))
        ys.append(a[:, li].copy() if li is not None else None)
        n += len(a)
    if n == 0:
        raise UserError(f"{what}: no rows")
    return Part(np.concatenate(xs), None if li is None else np.concatenate(ys), shape)
