"""A synthetic MNIST look-alike for tests that need images to learn from but not MNIST itself.

28×28 uint8, 10 classes, 400 training and 100 test images per class, written as the four IDX
files of the MNIST layout, so the library reads it as it reads any IDX folder
(`dataset = "<folder>"`). Each class is a fixed random pen stroke (a polyline of 4 points);
every image redraws its class's stroke with the points moved a few pixels, a random shift,
thickness and uneven ink on a background of zeros, and 3% of the training labels are another
class. Measured (3,000 training images, Adam at 1e-3, validation on the last 1,000): 784-10
reaches 73% after one epoch and 88% after five, 784-256-64-10 88% and 95%; on 2,000 images
784-32-10 is at 64% after one epoch (MNIST: 53%). No model gets 100%. Deterministic: the same
bytes on every machine (numpy's PCG64, fixed seed)."""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

TRAIN_PER_CLASS, TEST_PER_CLASS = 400, 100
SEED = 20
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _render(points: np.ndarray, thick: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """Strokes through `points` [N, P, 2] (row, col), as float images [N, 28, 28] in 0..1."""
    grid = np.stack(np.meshgrid(np.arange(28.0), np.arange(28.0), indexing="ij"), -1).reshape(1, -1, 2)
    dist = np.full((len(points), 28 * 28), np.inf)
    for a, b in zip(points[:, :-1].transpose(1, 0, 2), points[:, 1:].transpose(1, 0, 2), strict=True):
        ab = (b - a)[:, None]
        t = np.clip(((grid - a[:, None]) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-9), 0, 1)
        dist = np.minimum(dist, np.linalg.norm(grid - a[:, None] - t[..., None] * ab, axis=-1))
    return (np.clip(thick[:, None] + 0.5 - dist, 0, 1) * ink[:, None]).reshape(-1, 28, 28)


def _images(rng: np.random.Generator, strokes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    n = len(labels)
    points = strokes[labels] + rng.normal(0, 1.0, (n, strokes.shape[1], 2))
    points += rng.integers(-2, 3, (n, 1, 2))  # the whole stroke shifted
    img = _render(points, rng.uniform(1.5, 2.5, n), rng.uniform(0.7, 1.0, n))
    img *= 1 + rng.normal(0, 0.15, img.shape)  # uneven ink; the background stays 0, as MNIST's
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8).reshape(n, 28, 28)


def arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train [4000, 28, 28], y_train, x_test [1000, 28, 28], y_test), train shuffled."""
    rng = np.random.default_rng(SEED)
    strokes = rng.uniform(5, 23, (10, 4, 2))
    y_train = rng.permutation(np.repeat(np.arange(10), TRAIN_PER_CLASS))
    y_test = rng.permutation(np.repeat(np.arange(10), TEST_PER_CLASS))
    x_train, x_test = _images(rng, strokes, y_train), _images(rng, strokes, y_test)
    flip = rng.random(len(y_train)) < 0.03
    y_train = np.where(flip, (y_train + rng.integers(1, 10, len(y_train))) % 10, y_train)
    return x_train, y_train.astype(np.uint8), x_test, y_test.astype(np.uint8)


def idx(arr: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array (magic 0x0000_08_ndim, big-endian sizes, then the data)."""
    return struct.pack(">I", 0x800 | arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write(folder: Path) -> Path:
    """The four IDX files in `folder` (made if missing); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(FILES, arrays(), strict=True):
        (folder / name).write_bytes(idx(arr))
    return folder


VAL_SIZE = 1000
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "mlplab-test"  # conftest's MLPLAB_HOME


@cache
def path() -> str:
    """The set's IDX folder in the test cache, written once per version of this file (its name
    carries a hash of this file's text): a path that module-level suites can name, here and in
    the processes tests start."""
    folder = CACHE / f"synthetic-{hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]}"
    if not folder.is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=CACHE))
        write(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # another session wrote it first: the same bytes
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
    return str(folder)


def on_synthetic(suite, folder: str | None = None, val_size: int = VAL_SIZE):
    """A suite (TOML text with a [defaults] table, or a dict) trained on the synthetic folder
    (`path()` unless given) instead of MNIST: `dataset` and (unless the suite sets one)
    `val_size` added to its defaults."""
    folder = folder or path()
    if isinstance(suite, str):
        assert "[defaults]\n" in suite, "on_synthetic: the TOML needs a [defaults] table"
        val = "" if "\nval_size = " in suite else f"val_size = {val_size}\n"  # the suite's own wins
        return suite.replace("[defaults]\n", f'[defaults]\ndataset = "{folder}"\n{val}', 1)
    return {**suite, "defaults": {"dataset": folder, "val_size": val_size, **suite.get("defaults", {})}}
