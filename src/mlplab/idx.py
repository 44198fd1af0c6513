"""The IDX format (LeCun's MNIST files, and the family's variants: QMNIST's 2-D int32 labels,
EMNIST's transposed images): parsing with the declared size checked against the bytes, and a
gzipped file decompressed with its header's declared size as the cap."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from .bounded import gib, gunzip, is_gzip, max_bytes
from .errors import UserError

DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def header(raw: bytes, what: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, dims, header length) of an IDX file from its first bytes."""
    if len(raw) < 4:
        raise UserError(f"{what}: too short to be an IDX file ({len(raw)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in DTYPES or not 1 <= ndim <= 4:
        raise UserError(f"{what}: not an IDX file (bad magic number)")
    end = 4 + 4 * ndim
    if len(raw) < end:
        raise UserError(f"{what}: too short to be an IDX file ({len(raw)} bytes)")
    return np.dtype(DTYPES[code]), struct.unpack(f">{ndim}I", raw[4:end]), end


def parse_any(raw: bytes, what: str) -> np.ndarray:
    """An uncompressed IDX file of any IDX type as its full array (native byte order)."""
    dtype, dims, start = header(raw, what)
    size = int(np.prod(dims, dtype=object)) * dtype.itemsize
    if len(raw) - start != size:
        raise UserError(f"{what}: truncated or padded: header says {size} bytes, file has "
                        f"{len(raw) - start}")
    return np.frombuffer(raw, dtype=dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))


def parse_idx(raw: bytes, what: str) -> np.ndarray:
    """An uncompressed uint8 IDX file: images [N, rows*cols] or labels [N]."""
    dtype, dims, _ = header(raw, what)
    if dtype != np.uint8 or len(dims) not in (1, 3):
        raise UserError(f"{what}: not a uint8 IDX file of 1 or 3 dimensions (bad magic number)")
    arr = parse_any(raw, what)
    return arr.reshape(dims[0], -1).copy() if len(dims) == 3 else arr.copy()  # writable, owned


def idx_bytes(arr: np.ndarray, dtype: str = ">u1") -> bytes:
    """Encode an array as an IDX file: uint8 images [N, side*side] (as side×side) or [N, H, W],
    labels [N]; other dtypes and shapes as given (dtype: a key's value of DTYPES)."""
    code = {v: k for k, v in DTYPES.items()}[dtype]
    arr = np.asarray(arr)
    if dtype == ">u1" and arr.ndim == 2:
        side = int(round(arr.shape[1] ** 0.5))
        arr = arr.reshape(len(arr), side, side)
    arr = np.ascontiguousarray(arr, dtype=np.dtype(dtype))
    return struct.pack(f">HBB{arr.ndim}I", 0, code, arr.ndim, *arr.shape) + arr.tobytes()


def declared_size(raw_gz: bytes, what: str) -> int:
    """The uncompressed size an IDX file inside a gzip stream declares, from its header only."""
    try:
        head = zlib.decompressobj(wbits=31).decompress(raw_gz, 4 + 4 * 4)  # the longest header
    except zlib.error as e:
        raise UserError(f"{what}: corrupt or truncated gzip data ({e})") from None
    dtype, dims, start = header(head, what)
    return start + int(np.prod(dims, dtype=object)) * dtype.itemsize


def read_file(path: Path) -> np.ndarray:
    """An IDX file, raw or gzipped, decompressed no further than its header declares."""
    what = str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes() + 64:
            raise UserError(f"{what}: {gib(size)}, over the {gib(max_bytes())} limit "
                            "(MLPLAB_MAX_DATA_BYTES)")
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{what}: cannot read ({e.strerror or e})") from None
    if is_gzip(raw):
        want = declared_size(raw, what)
        if want > max_bytes():
            raise UserError(f"{what}: its header declares {gib(want)}, over the "
                            f"{gib(max_bytes())} limit (MLPLAB_MAX_DATA_BYTES)")
        raw = gunzip(raw, what, cap=want)
    return parse_any(raw, what)
