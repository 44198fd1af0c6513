"""The parse cache: a CSV, Parquet file or image folder is parsed once into uint8 arrays, kept
as one .npz under $MLPLAB_HOME/datasets/parsed/<key>.npz, and found again by its key:

- files (CSV, Parquet): the sha256 of their bytes (a 77 MB train.csv hashes in a fraction of a
  second; parsing it takes seconds);
- image folders: every image's relative path, size and modification time (hashing every file's
  bytes would cost as much as decoding them).

The layout and a format version are part of the key. A cache file that does not read back
(damaged, from another version) is ignored and rebuilt; an unwritable MLPLAB_HOME costs the
cache, never the run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import imagefolder
from .bounded import read_npz
from .errors import UserError
from .layouts import Found
from .readers import Raw
from .sources import home

VERSION = 1
CACHED = ("csv", "parquet", "imagefolder")  # the layouts whose parsing costs seconds


def folder() -> Path:
    return home() / "datasets" / "parsed"


def _file_hash(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None


def key(found: Found) -> str:
    """The cache key of what `locate` found (see the module docstring)."""
    parts: list = [VERSION, found.layout]
    for role, paths in sorted(found.files.items()):
        for p in paths:
            parts.append([role, p.name, imagefolder.stat_key(p) if p.is_dir() else _file_hash(p)])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def get(k: str, log: Callable[[str], None]) -> Raw | None:
    path = folder() / f"{k}.npz"
    if not path.is_file():
        return None
    try:
        z = read_npz(path)
        meta = json.loads(str(z["meta"]))
        classes = tuple(meta["classes"]) if meta["classes"] is not None else None
        return Raw(meta["layout"], z["x_train"], z["y_train"], z.get("x_test"), z.get("y_test"),
                   tuple(meta["shape"]), classes, list(meta["notes"]))
    except (UserError, KeyError, ValueError, TypeError) as e:
        log(f"parse cache {path.name} not used ({e}); parsing again")
        return None


def put(k: str, raw: Raw, log: Callable[[str], None]) -> None:
    """Store raw under k, atomically (a temporary file renamed); a failure is one log line."""
    meta = {"layout": raw.layout, "shape": list(raw.shape), "notes": raw.notes,
            "classes": list(raw.classes) if raw.classes is not None else None}
    arrays = {"x_train": raw.x_train, "y_train": raw.y_train, "meta": np.array(json.dumps(meta))}
    if raw.x_test is not None:
        arrays |= {"x_test": raw.x_test, "y_test": raw.y_test}
    dest = folder() / f"{k}.npz"
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        tmp.replace(dest)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        log(f"parsed data not cached ({e.strerror or e}); set MLPLAB_HOME to a writable folder")


def size() -> int:
    """Bytes held by the parse cache."""
    d = folder()
    return sum(p.stat().st_size for p in d.glob("*.npz")) if d.is_dir() else 0
