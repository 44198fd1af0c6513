"""The values a run's settings may take, torch-free: the registries' names (checked here so
that validating a config never imports torch; tests assert they equal the registries' keys),
architecture strings such as '784-512-256-10', dataset names and paths."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DATASET_NAMES = ("mnist", "fashion-mnist")
LAYOUT_NAMES = ("idx", "emnist", "npz", "csv", "parquet", "imagefolder")  # layouts.LAYOUTS
DATA_SUFFIXES = (".npz", ".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")
NORM_NAMES = ("none", "batch", "layer")
ACTIVATION_NAMES = ("relu", "sigmoid", "tanh", "gelu", "elu", "selu", "leaky_relu", "silu", "linear")
INITIALIZER_NAMES = (
    "random_normal", "random_uniform", "glorot_uniform", "glorot_normal",
    "he_normal", "he_uniform", "lecun_normal", "lecun_uniform",
)
SCALED_INITIALIZERS = ("random_normal", "random_uniform")  # the ones that read init_stddev
OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")

# Keras would use glorot_uniform everywhere; for hidden layers we pick the initializer that suits
# the activation. The output layer gets Keras' glorot_uniform unless `output_init` says otherwise.
DEFAULT_INIT = {"relu": "he_normal", "gelu": "he_normal", "elu": "he_normal", "silu": "he_normal",
                "leaky_relu": "he_normal", "selu": "lecun_normal"}


ARCHITECTURE = re.compile(r"[0-9]+(?:-[0-9]+)*", re.ASCII)
MAX_WIDTH = 10**12  # far beyond any memory; keeps the arithmetic on widths small


def parse_architecture(text: str, n_in: int = 784, n_out: int = 10) -> tuple[int, ...]:
    """'784-512-256-10' or hidden sizes only '512-256' ('784-10': no hidden layer) -> full layer
    widths. Only ASCII digits and '-' (spaces are ignored): Python's int() would also read
    full-width or other scripts' digits, giving one architecture several spellings and run ids."""
    text = str(text).replace(" ", "")
    if not text:
        raise ValueError("architecture is empty; give widths joined by '-', e.g. '784-512-256-10' "
                         "or '512-256' (hidden sizes), or '784-10' for no hidden layer")
    if not ARCHITECTURE.fullmatch(text):
        raise ValueError(
            f"architecture {text!r} must be widths joined by '-', written with the digits 0-9, "
            "e.g. '784-512-256-10' or '512-256'")
    parts = text.split("-")
    if any(len(p.lstrip("0")) > 13 for p in parts):  # int() of thousands of digits is slow, then fails
        raise ValueError(f"architecture {text[:40]!r}: a width is over {MAX_WIDTH:,}")
    widths = tuple(int(p) for p in parts)
    if any(w > MAX_WIDTH for w in widths):
        raise ValueError(f"architecture {text!r}: a width is over {MAX_WIDTH:,}")
    if any(w <= 0 for w in widths):
        raise ValueError(f"architecture {text!r}: every width must be a positive integer")
    if len(widths) >= 2 and widths[0] == n_in and widths[-1] == n_out:
        return widths
    return (n_in, *widths, n_out)


def plain_value(v: Any) -> Any:
    """A numpy scalar (or a list of them) as the Python value it holds; anything else as is."""
    if type(v).__module__ == "numpy" and hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    return [plain_value(x) for x in v] if isinstance(v, list) else v


def check_dataset_name(name: str) -> str:
    """A registered name, or "[LAYOUT:]PATH" to data in a supported layout (read when loaded)."""
    layout, sep, rest = name.partition(":")
    path = rest if sep and layout in LAYOUT_NAMES else name
    if name in DATASET_NAMES or "/" in path or path.endswith(DATA_SUFFIXES) or Path(path).exists():
        return name
    raise ValueError(f"dataset {name!r} is not one of: {', '.join(DATASET_NAMES)}, or a path to "
                     "data (a CSV, Parquet or .npz file, a folder of IDX files or images; "
                     f"LAYOUT:PATH with LAYOUT one of {', '.join(LAYOUT_NAMES)})")


def one_of(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{field} {value!r} is not one of: {', '.join(allowed)}")
    return value
