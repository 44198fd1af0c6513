"""Reading untrusted data files with a bound on memory: nothing is allocated from a size that a
file *declares* before that size is checked against a limit and against the file itself.

- gzip: decompressed by streaming, stopped as soon as the output passes a cap (a registered
  dataset's known size, an IDX header's declared size, or the data limit).
- .npy / .npz: the array header is read first (numpy.lib.format, never pickle); shape × dtype
  must match the bytes the file (or zip member) really holds and stay under the limit.
- text: a stream that stops at a line longer than `MAX_LINE` or at more than the limit in all.
- images: Pillow's decompression-bomb check turned into an error, and a pixel limit checked on
  the header, before any pixel is decoded.

Limits: `MLPLAB_MAX_DATA_BYTES` (default 2 GiB: any one decompressed file or array),
`MAX_CLASSES` labels, `MAX_LINE` bytes per CSV line.
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

from .errors import UserError

DEFAULT_MAX_BYTES = 2 << 30
MAX_LINE = 64 << 20  # a 4000×4000-pixel row of "255," is 64 MB
MAX_CLASSES = 1000
MAX_DATA_PIXELS = 16 << 20  # one image of a dataset: 4096×4096
CHUNK = 1 << 20


def max_bytes() -> int:
    """The most bytes one decompressed file or array may hold (MLPLAB_MAX_DATA_BYTES)."""
    raw = os.environ.get("MLPLAB_MAX_DATA_BYTES", "")
    try:
        return int(raw) if raw else DEFAULT_MAX_BYTES
    except ValueError:
        raise UserError(f"MLPLAB_MAX_DATA_BYTES={raw!r}: expected a number of bytes") from None


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


# ---------------------------------------------------------------------------------------------
# gzip


def is_gzip(raw: bytes) -> bool:
    return raw[:2] == b"\x1f\x8b"


def gunzip(raw: bytes, what: str, cap: int | None = None) -> bytes:
    """raw (possibly several gzip members) decompressed, at most `cap` bytes (default: the data
    limit); a UserError as soon as the output would pass it, before it is all in memory."""
    limit = max_bytes() if cap is None else cap
    out, total, rest = [], 0, raw
    try:
        while rest:
            d = zlib.decompressobj(wbits=31)
            buf = rest
            while buf:
                piece = d.decompress(buf, CHUNK)
                total += len(piece)
                if total > limit:
                    raise UserError(f"{what}: decompresses to more than {limit:,} bytes (the most "
                                    "it can hold); refusing it as corrupt or a decompression bomb")
                out.append(piece)
                buf = d.unconsumed_tail
                if d.eof:
                    break
            if not d.eof:
                raise EOFError("compressed data ended before the end-of-stream marker")
            rest = d.unused_data
            if rest and not is_gzip(rest):
                break  # trailing garbage after the last member: what gzip itself ignores
    except (zlib.error, EOFError) as e:
        raise UserError(f"{what}: corrupt or truncated gzip data ({e})") from None
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# .npy / .npz


def _npy_header(fp: IO[bytes], what: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, header length) of an .npy stream, without its data."""
    fmt = np.lib.format
    try:
        major, _ = fmt.read_magic(fp)
        read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
        shape, fortran, dtype = read(fp)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{what}: not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise UserError(f"{what}: holds Python objects (a pickle); mlplab reads only plain "
                        "numeric arrays, never pickled objects")
    return tuple(shape), dtype, fortran, fp.tell()


def _read_npy(fp: IO[bytes], size: int, what: str) -> np.ndarray:
    shape, dtype, fortran, header = _npy_header(fp, what)
    count = int(np.prod(shape, dtype=object))
    need = count * dtype.itemsize
    if need > max_bytes():
        raise UserError(f"{what}: declares a {'×'.join(map(str, shape))} {dtype} array "
                        f"({gib(need)}), over the {gib(max_bytes())} limit (MLPLAB_MAX_DATA_BYTES)")
    if need != size - header:
        raise UserError(f"{what}: its header declares {need:,} bytes of data, the file holds "
                        f"{size - header:,}: truncated or not what it says")
    arr = np.empty(count, dtype)  # writable, filled in place: no second copy
    view, got = memoryview(arr.reshape(-1).view(np.uint8)), 0
    while got < need and (n := fp.readinto(view[got:])):
        got += n
    if got != need:
        raise UserError(f"{what}: truncated ({got:,} of {need:,} bytes)")
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def read_npy(path: Path) -> np.ndarray:
    """An .npy file, its header checked before anything is allocated; never unpickled."""
    try:
        with open(path, "rb") as f:
            return _read_npy(f, path.stat().st_size, str(path))
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, each member's header checked against its size and the limit
    before it is read; members that are not .npy are refused."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                what = f"{path}[{info.filename}]"
                if not info.filename.endswith(".npy"):
                    raise UserError(f"{what}: an .npz holds only .npy arrays")
                if info.file_size > max_bytes() + 4096:
                    raise UserError(f"{what}: {gib(info.file_size)} uncompressed, over the "
                                    f"{gib(max_bytes())} limit (MLPLAB_MAX_DATA_BYTES)")
                with z.open(info) as f:  # zipfile stops at the member's declared size
                    out[info.filename[:-4]] = _read_npy(f, info.file_size, what)
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise UserError(f"{path}: not a readable .npz ({e})") from None
    return out


# ---------------------------------------------------------------------------------------------
# text


class LineStream:
    """A binary stream that refuses a line over MAX_LINE bytes or more than `cap` bytes in all,
    so that a text parser never holds more than that (gzip bombs, files without newlines)."""

    def __init__(self, f: IO[bytes], what: str, cap: int | None = None):
        self.f, self.what = f, what
        self.cap = 4 * max_bytes() if cap is None else cap  # text is longer than its values
        self.total = self.since_newline = 0

    def read(self, n: int) -> bytes:
        try:
            b = self.f.read(n)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{self.what}: cannot read ({e})") from None
        self.total += len(b)
        if self.total > self.cap:
            raise UserError(f"{self.what}: more than {gib(self.cap)} of text, over the limit "
                            "(MLPLAB_MAX_DATA_BYTES × 4); refusing it")
        i = b.rfind(b"\n")
        self.since_newline = self.since_newline + len(b) if i < 0 else len(b) - i - 1
        if self.since_newline > MAX_LINE:
            raise UserError(f"{self.what}: a line longer than {gib(MAX_LINE)}; not a table of "
                            "pixels (or a decompression bomb)")
        return b

    def blocks(self, size: int = 1 << 23) -> Iterator[bytes]:
        """Whole lines, about `size` bytes at a time."""
        rest = b""
        while True:
            b = self.read(size)
            if not b:
                if rest.strip():
                    yield rest
                return
            b = rest + b
            i = b.rfind(b"\n")
            if i < 0:
                rest = b
                continue
            yield b[:i + 1]
            rest = b[i + 1:]


@contextmanager
def open_maybe_gzip(path: Path) -> Iterator[IO[bytes]]:
    """A file, decompressed by streaming when it is gzip (whatever its name). Read it through
    `LineStream`, which turns read errors (a corrupt gzip member) into one UserError."""
    import gzip

    try:
        f = open(path, "rb")  # noqa: SIM115  (closed below)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    with f:
        gz = is_gzip(f.read(2))
        f.seek(0)
        if not gz:
            yield f
            return
        with gzip.GzipFile(fileobj=f) as g:
            yield g


# ---------------------------------------------------------------------------------------------
# images


def open_image(source, what: str, max_pixels: int):
    """A decoded Pillow image, its size checked against max_pixels from the header first;
    decompression bombs, truncated and unreadable files are one UserError naming `what`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(source)
            w, h = im.size
            if w * h > max_pixels:
                im.close()
                raise UserError(f"{what}: {w}×{h} = {w * h / 1e6:.1f} megapixels, over the "
                                f"limit of {max_pixels / 1e6:.1f}; refusing it")
            im.load()
            return im
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"{what}: refused as a decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise UserError(f"{what}: cannot decode as an image ({e})") from None
