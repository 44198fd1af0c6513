"""Strict checks of what a user hands in besides a run's settings: names (of experiments and
suites), seeds and counts, the device, checkpoint cadence, a Dask scheduler address, paths; and
pydantic's first error as one line. Each check raises a UserError naming the parameter (as the
Python API calls it; the CLI's options have the same names), the value and what is allowed.
Torch-free: suites are validated without importing torch."""

from __future__ import annotations

import math
import os
import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import UserError

MAX_SEED = 2**63 - 1  # the run store keeps seeds as SQLite INTEGER (signed 64-bit)
MAX_NAME = 200  # characters in an experiment's or a suite's name: file and column friendly
DEVICES = ("auto", "cpu", "cuda")
CLUSTER_SCHEMES = ("tcp", "tls", "ws", "wss")  # what distributed speaks to a remote scheduler
# Bidirectional overrides and isolates reorder what a terminal or a report shows
BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def is_int(value: Any) -> bool:
    """A whole number, not a bool (True is an int to Python, never a count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_name(value: Any, where: str, what: str = "name") -> str:
    """A name is data: text of 1 to MAX_NAME characters, no control characters (newline, NUL,
    ESC, ...), no bidirectional overrides."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: {what} must be non-empty text, got {value!r}")
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in BIDI), None)
    if bad is not None:
        raise UserError(f"{where}: {what} {value!r} contains the control character {bad!r}; "
                        "names are plain text on one line")
    if len(value) > MAX_NAME:
        raise UserError(f"{where}: {what} {value[:40]!r}… is {len(value)} characters long; at most "
                        f"{MAX_NAME} are allowed")
    return value


def check_names(value: Any, param: str) -> tuple[str, ...]:
    """A name or a list of names (None: none) as a tuple, e.g. `only`."""
    if value is None:
        return ()
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{param} must be a name or a list of names, got {value!r}")
    return tuple(names)


def check_text(value: Any, where: str, what: str) -> str:
    """Free text (a description): any text without control characters but newline and tab."""
    if not isinstance(value, str):
        raise UserError(f"{where}: {what} must be text, got {value!r}")
    bad = next((c for c in value if c not in "\n\t" and (unicodedata.category(c) == "Cc"
                                                          or c in BIDI)), None)
    if bad is not None:
        raise UserError(f"{where}: {what} contains the control character {bad!r}")
    return value


def check_seed(value: Any, where: str) -> int:
    if not is_int(value) or not 0 <= value <= MAX_SEED:
        raise UserError(f"{where}: seed {value!r} must be a whole number from 0 to {MAX_SEED:,} "
                        "(2^63-1)")
    return value


def check_count(value: Any, param: str, upper: int | None = None) -> int:
    """A positive whole number (seeds, epochs, workers), at most `upper`."""
    if not is_int(value) or value < 1:
        raise UserError(f"{param} must be a positive whole number, got {value!r}")
    if upper is not None and value > upper:
        raise UserError(f"{param} = {value:,} is over the limit of {upper:,}")
    return value


def check_device(value: Any, local: bool = True) -> str:
    """auto, cpu or cuda; cuda must exist here unless the groups train on a remote cluster."""
    if value not in DEVICES or not isinstance(value, str):
        raise UserError(f"device {value!r} is not one of: {', '.join(DEVICES)}")
    if value == "cuda" and local:
        import torch

        if not torch.cuda.is_available():
            raise UserError("device 'cuda': no CUDA device is available here; use auto or cpu")
    return value


def check_checkpoint_every(value: Any) -> float | None:
    """Seconds between a group's epoch checkpoints: 0 every epoch, inf never on a clock (only at
    the rungs of successive halving), None none at all; NaN, negatives and text are refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or value < 0:
        raise UserError(f"checkpoint_every {value!r} must be seconds >= 0 (0: every epoch, inf: "
                        "only at halving rungs), or None for no checkpoints")
    return float(value)


def check_cluster(value: Any) -> str | None:
    """A Dask scheduler address: tcp://, tls://, ws:// or wss:// (no scheme: tcp), HOST:PORT."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"cluster must be a scheduler address such as tcp://HOST:8786, got {value!r}")
    scheme, sep, rest = value.partition("://")
    if sep and scheme not in CLUSTER_SCHEMES:
        raise UserError(f"cluster {value!r}: scheme {scheme}:// is not one of: "
                        f"{', '.join(s + '://' for s in CLUSTER_SCHEMES)} (e.g. tcp://HOST:8786)")
    host = rest if sep else value
    if not host or any(unicodedata.category(c) in ("Cc", "Zs") for c in host):
        raise UserError(f"cluster {value!r} must be HOST:PORT after the scheme, e.g. tcp://HOST:8786")
    return value


def check_path(value: Any, param: str, folder: bool | None = False,
               required: bool = False) -> str | None:
    """A path given as text or a PathLike (None: not given, unless `required`); `folder`: an
    existing folder (None: a folder or nothing yet, as a results folder to create)."""
    if value is None and not required:
        return None
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise UserError(f"{param} must be a path (text or a pathlib.Path), got {value!r}")
    if folder and not os.path.isdir(value):
        raise UserError(f"{param} {str(value)!r}: no such folder")
    if folder is None and os.path.exists(value) and not os.path.isdir(value):
        raise UserError(f"{param} {str(value)!r}: exists and is not a folder")
    return str(value)


# pydantic's error types -> what is allowed, said as a suite writer would write it
TYPE_HINTS = {
    "int_type": "a whole number such as 128, not true/false, 128.0 or \"128\"",
    "float_type": "a number such as 0.01, not true/false or \"0.01\"",
    "bool_type": "true or false",
    "string_type": "text in quotes",
    "list_type": "a list [...]",
}


def explain(e, keys=()) -> str:
    """pydantic's first error (a ValidationError) as one line: the field path, the problem, what
    is allowed, the value given. keys: the allowed keys, named when a key is unknown."""
    err = e.errors()[0]
    path = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown key {path!r}; allowed keys: {', '.join(keys)}"
    msg = err["msg"].removeprefix("Value error, ")
    hint = TYPE_HINTS.get(err["type"])
    msg = f"{msg}: {hint}" if hint else msg
    return f"{path}: {msg} (got {err.get('input')!r})"


def check_run_options(device: Any, workers: Any, cluster: Any, checkpoint_every: Any,
                      data_dir: Any) -> None:
    """The options of a run besides its suite (the CLI's and the API's alike), before anything
    is written."""
    check_device(device, local=cluster is None)
    if workers is not None:
        check_count(workers, "workers")
    check_cluster(cluster)
    if cluster is not None and workers is not None:
        raise UserError("give cluster (an existing scheduler) or workers (a local cluster), not both")
    check_checkpoint_every(checkpoint_every)
    check_path(data_dir, "data_dir", folder=True)


class _UserErrors(type(BaseModel)):  # pydantic's model metaclass
    """`RunConfig(lr="x")`, `Suite(...)` called from Python: a bad value is a UserError naming
    the field, as from a suite file. (Only direct construction: model_validate, which the
    library's own paths use, keeps pydantic's ValidationError; an overridden __init__ would
    be called by those too.)"""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as e:
            raise UserError(f"{cls.__name__}: {explain(e, cls.model_fields)}") from None


class Frozen(BaseModel, metaclass=_UserErrors):
    """The base of every validated setting (RunConfig, Suite, SearchSpec): frozen, unknown keys
    rejected, no inf/nan in any float (lr = inf is a typo, not a setting)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
