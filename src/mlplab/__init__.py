"""mlplab: build, train and compare many MLP architectures on MNIST-style data.

    import mlplab
    results = mlplab.run("seed", seeds=3)   # built-in suite, TOML path, dict or mlplab.Suite
    results.table()                         # the comparison as a pandas DataFrame
    results.best().predict(images)

Importing mlplab leaves your session as it is: no matplotlib backend is chosen, and training
restores torch's global RNG state, thread count and TF32 flags when it returns.
"""

from importlib.metadata import PackageNotFoundError, version

from .config import RunConfig
from .errors import UserError
from .interrupt import Interrupted
from .suite import Suite

_API = {"Results": "results", "Run": "trained", "load": "api", "run": "api"}  # name -> module


def __getattr__(name: str):
    """The training API is imported on first use: building and validating a Suite or a RunConfig
    never imports torch (fast, and possible where torch is not wanted)."""
    import importlib

    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    if name == "datasets":  # mlplab.datasets.load / inspect: imports torch, so on first use
        return importlib.import_module(".datasets", __name__)
    raise AttributeError(f"module 'mlplab' has no attribute {name!r}")


def __dir__() -> list[str]:
    """What tab completion offers: the whole API, the parts imported on first use included."""
    return sorted({*globals(), *__all__})


try:
    __version__ = version("mlplab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Interrupted", "Results", "Run", "RunConfig", "Suite", "UserError", "datasets", "load", "run",
           "__version__"]
