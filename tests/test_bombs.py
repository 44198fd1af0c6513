"""Small files that declare or inflate to gigabytes: each is refused with one clear line before
the memory is taken. Every case runs in a subprocess whose address space is capped
(RLIMIT_AS = what it holds after its imports + 1 GiB), so an unbounded allocation would end in
MemoryError there instead of a refusal."""

import gzip
import io
import json
import re
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

from mlplab.idx import idx_bytes

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")

RUNNER = r"""
import json, os, resource, sys
from pathlib import Path
import PIL.Image
from mlplab import data, predict, sources
from mlplab.errors import UserError
try:
    import pyarrow.parquet
except ImportError:
    pass
vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
for name, kind, path, env in json.load(open(sys.argv[1])):
    os.environ.pop("MLPLAB_MAX_DATA_BYTES", None)
    os.environ.update(env or {})
    try:
        if kind == "load":
            data.load(path)
        elif kind == "predict":
            predict.load_inputs([path])
        elif kind == "mirror":
            sources._known(sources.FILES[0], Path(path).read_bytes(), "mirror train-images")
        result = "accepted"
    except UserError as e:
        result = str(e)
    except MemoryError:
        result = "MemoryError"
    print(json.dumps([name, result]), flush=True)
"""

ZEROS = gzip.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in about 64 KB


def members(n: int, first: bytes = b"") -> bytes:
    """A gzip file of many members: `first`, then n × 64 MiB of zeros (n/16 GiB inflated)."""
    return (gzip.compress(first) if first else b"") + ZEROS * n


def png_header(w: int, h: int) -> bytes:
    """A PNG that declares w×h 8-bit gray pixels (its data is a few bytes)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1000)))
            + chunk(b"IEND", b""))


def npy_header(shape, dtype="<u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + bytes(1000)


def write_idx_pair(folder, images: bytes, n=10):
    folder.mkdir()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(images)
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(n, np.uint8)))
    return folder


def make_cases(tmp):
    """(name, runner kind, path, message, env) for every format."""
    cases = []
    # IDX: a header for 10 images, then 4 GiB more; and a header that declares 4.6 TiB
    head = idx_bytes(np.zeros((10, 784), np.uint8))
    cases.append(("idx gzip beyond its header", "load", write_idx_pair(tmp / "i1", members(64, head)),
                  "decompresses to more than 7,856 bytes", None))
    huge = struct.pack(">HBBIII", 0, 8, 3, 1 << 31, 28, 28)
    cases.append(("idx header declaring TiB", "load", write_idx_pair(tmp / "i2", gzip.compress(huge)),
                  "its header declares 1568.00 GiB", None))
    # a mirror's train-images.gz: capped at its known size before the hash is computed
    (tmp / "mirror.gz").write_bytes(members(64))
    cases.append(("mirror gzip", "mirror", tmp / "mirror.gz", "more than 47,040,016 bytes", None))
    # .npz and .npy: headers that declare 10^10 bytes over a few bytes of data
    with zipfile.ZipFile(tmp / "bomb.npz", "w") as z:
        z.writestr("x_train.npy", npy_header((100_000, 100_000)))
        z.writestr("y_train.npy", npy_header((10,), "<i8"))
    cases.append(("npz header", "load", tmp / "bomb.npz", "over the 2.00 GiB limit", None))
    (tmp / "bomb.npy").write_bytes(npy_header((100_000, 100_000)))
    cases.append(("npy header (predict)", "predict", tmp / "bomb.npy", "over the 2.00 GiB limit", None))
    with zipfile.ZipFile(tmp / "labels.npz", "w") as z:  # one label of 1e300: no class list built
        buf = io.BytesIO()
        np.save(buf, np.zeros((3, 784), np.uint8))
        z.writestr("x_train.npy", buf.getvalue())
        buf = io.BytesIO()
        np.save(buf, np.array([0, 1, 1e300]))
        z.writestr("y_train.npy", buf.getvalue())
    cases.append(("label 1e300", "load", tmp / "labels.npz", "at most 1000 classes", None))
    # CSV.gz: one endless line; and endless valid rows (past a lowered data limit)
    line = gzip.compress(b"1," * (32 << 20), 9)
    (tmp / "line.csv.gz").write_bytes(gzip.compress(b"label,pixel0\n") + line * 40)
    cases.append(("csv.gz endless line", "load", tmp / "line.csv.gz", "a line longer than 64.0 MiB", None))
    rows = gzip.compress(("3," + "0," * 783 + "0\n").encode() * 20_000, 9)
    (tmp / "rows.csv.gz").write_bytes(rows * 200)  # 4,000,000 rows: 3.1 GB of pixels
    cases.append(("csv.gz endless rows", "load", tmp / "rows.csv.gz", "more than 16.0 MiB of pixels",
                  {"MLPLAB_MAX_DATA_BYTES": str(16 << 20)}))
    # images: 400 megapixels in predict; 25 megapixels in a dataset folder; in a Parquet file
    (tmp / "big.png").write_bytes(png_header(20_000, 20_000))
    cases.append(("png in predict", "predict", tmp / "big.png", "decompression bomb", None))
    (tmp / "f" / "a").mkdir(parents=True)
    (tmp / "f" / "a" / "1.png").write_bytes(png_header(5000, 5000))
    cases.append(("png in an image folder", "load", tmp / "f", "25.0 megapixels, over the limit", None))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return cases
    pq.write_table(pa.table({"image": [{"bytes": png_header(20_000, 20_000), "path": None}],
                             "label": [1]}), tmp / "train.parquet")
    cases.append(("png in parquet", "load", tmp / "train.parquet", "decompression bomb|megapixels", None))
    return cases


def test_every_bomb_is_refused_in_one_line_under_a_memory_limit(tmp_path):
    cases = make_cases(tmp_path)
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps([[n, kind, str(path), env] for n, kind, path, _, env in cases]))
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(spec)], capture_output=True,
                          text=True, timeout=600)
    got = dict(json.loads(line) for line in proc.stdout.splitlines())
    failures = [f"{name}: {got.get(name, proc.stderr[-500:])!r}" for name, _, _, message, _ in cases
                if not re.search(message, got.get(name, "")) or "\n" in got[name]]
    assert not failures, "\n".join(failures)
