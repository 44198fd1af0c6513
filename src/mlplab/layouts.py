"""Datasets as users hold them: which layout a path is (`locate`), and reading it (`read`).

`dataset = "PATH"` is detected from what is there; `dataset = "LAYOUT:PATH"` says it outright.
A PATH may also be a folder plus a file-name prefix (`emnist/emnist-digits`, `kmnist/k49`) to
pick one set of files among several. Layouts (`LAYOUTS`):

- idx: IDX files (raw or .gz) named with train/test (or t10k) and images/labels; QMNIST's 2-D
  int32 labels (the class is the first column); EMNIST's files (a name with "emnist") are
  stored transposed and turned upright. `emnist:` forces the transposition.
- npz: one .npz with x_train, y_train, x_test, y_test (Keras'), or KMNIST's pairs of .npz files
  (`*-train-imgs.npz`, `*-train-labels.npz`, …) each holding `arr_0`.
- csv / parquet: `tables.py`; a file, or a folder with train* and test* files (a test file
  without labels, Kaggle's test.csv, is left out: a test split is then held out).
- imagefolder: `imagefolder.py`.

Class names: folder names (imagefolder), Hugging Face metadata (parquet), a `classes` array in
an .npz, or a `classes.txt` (one name a line) / `classes.json` (a list) beside the data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import imagefolder
from .config import LAYOUT_NAMES as LAYOUTS  # config checks names without reading data
from .errors import UserError

ROLES = ("train_images", "train_labels", "test_images", "test_labels")
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")


@dataclass
class Found:
    """Where a dataset is: its layout, its files by role, and what to say about it."""

    layout: str
    root: Path
    files: dict[str, list[Path]]
    notes: list[str] = field(default_factory=list)


def parse_spec(name: str) -> tuple[str | None, Path]:
    layout, sep, rest = name.partition(":")
    if sep and layout in LAYOUTS and rest:
        return layout, Path(rest).expanduser()
    return None, Path(name).expanduser()


def _split(name: str) -> str | None:
    low = name.lower()
    train, test = "train" in low, "test" in low or "t10k" in low
    return "train" if train and not test else "test" if test and not train else None


def _kind(name: str) -> str | None:
    low = name.lower()
    images = any(t in low for t in ("image", "imgs", "idx3"))
    labels = any(t in low for t in ("label", "idx1", "idx2"))
    return "images" if images and not labels else "labels" if labels and not images else None


def _pairs(entries: list[Path], what: str, root: Path) -> dict[str, list[Path]] | None:
    """Files by role (train/test × images/labels) from their names, one per role."""
    roles: dict[str, list[Path]] = {}
    for p in entries:
        s, k = _split(p.name), _kind(p.name)
        if s and k:
            roles.setdefault(f"{s}_{k}", []).append(p)
    if not roles:
        return None
    for role, paths in roles.items():
        if len(paths) > 1:  # the same file raw and gzipped: the raw one
            raw = [p for p in paths if not p.name.endswith(".gz")]
            if len(raw) == 1 and all(p.name.removesuffix(".gz") == raw[0].name for p in paths):
                roles[role] = raw
            else:
                raise UserError(f"{root}: several {what} files for {role.replace('_', ' ')} "
                                f"({', '.join(sorted(p.name for p in paths)[:4])}); pick one set by "
                                f"its prefix, e.g. dataset = \"{root / paths[0].name.split('-')[0]}\"")
    missing = [r for r in ROLES[:2] if r not in roles] + (
        [r for r in ROLES[2:] if r not in roles] if any(r in roles for r in ROLES[2:]) else [])
    if missing:
        raise UserError(f"{root}: no {what} file for {missing[0].replace('_', ' ')} (names need "
                        "train/test (or t10k) and images/labels)")
    return roles


def _find_idx(root, entries, transposed):
    files = [p for p in entries if p.is_file() and ("ubyte" in p.name.lower() or "-idx" in p.name.lower())]
    roles = _pairs(files, "IDX", root) if files else None
    if roles is None:
        return None
    emnist = transposed if transposed is not None else any(
        "emnist" in p.name.lower() for ps in roles.values() for p in ps)
    return Found("emnist" if emnist else "idx", root, roles)


def _find_npz(root, entries):
    files = [p for p in entries if p.is_file() and p.suffix == ".npz"]
    if not files:
        return None
    if len(files) == 1 and not (_split(files[0].name) and _kind(files[0].name)):
        return Found("npz", root, {"npz": files})
    return Found("npz", root, _pairs(files, ".npz", root) or {})


def _find_tables(root, entries, layout):
    suffixes = CSV_SUFFIXES if layout == "csv" else (".parquet",)
    if layout == "parquet":  # Hugging Face keeps shards in data/ or a config folder
        entries = [p for e in entries for p in ([e] if e.is_file() else sorted(e.rglob("*.parquet")))]
    files = sorted(p for p in entries if p.is_file() and p.name.lower().endswith(suffixes))
    if not files:
        return None
    by = {"train": [p for p in files if _split(p.name) == "train"],
          "test": [p for p in files if _split(p.name) == "test"]}
    if not by["train"]:
        if len(files) > 1:
            raise UserError(f"{root}: several {layout} files and none named train*: "
                            f"{', '.join(p.name for p in files[:4])}; name the one to use")
        by["train"] = files
    if layout == "csv" and len(by["train"]) > 1:
        raise UserError(f"{root}: several train CSV files ({', '.join(p.name for p in by['train'])})")
    return Found(layout, root, {k: v for k, v in by.items() if v})


def _find_imagefolder(root, entries):
    roots = imagefolder.split_roots(root) if root.is_dir() else None
    if roots is None:
        return None
    return Found("imagefolder", root, {"train": [roots[0]], **({"test": [roots[1]]} if roots[1] else {})})


def locate(name: str) -> Found:
    """The layout and files of the dataset at `name` ("[LAYOUT:]PATH[prefix]")."""
    layout, path = parse_spec(name)
    if path.is_file():
        low = path.name.lower()
        kind = layout or ("npz" if low.endswith(".npz") else "parquet" if low.endswith(".parquet")
                          else "csv" if low.endswith(CSV_SUFFIXES) else None)
        if kind in ("csv", "parquet"):
            return Found(kind, path.parent, {"train": [path]})
        if kind == "npz":
            return Found("npz", path.parent, {"npz": [path]})
        raise UserError(f"{path}: a single file must be .csv(.gz), .parquet or .npz (or say the "
                        f"layout: {', '.join(f'{n}:PATH' for n in LAYOUTS)})")
    root, prefix = (path, "") if path.is_dir() else (path.parent, path.name)
    if not root.is_dir():
        raise UserError(f"dataset {name!r}: no such file or folder")
    entries = sorted(p for p in root.iterdir() if p.name.startswith(prefix) and not p.name.startswith("."))
    if prefix and not entries:
        raise UserError(f"dataset {name!r}: no such file or folder (nor files starting with "
                        f"{prefix!r} in {root})")
    finders = {
        "idx": lambda: _find_idx(root, entries, {"emnist": True, "idx": False}.get(layout)),
        "npz": lambda: _find_npz(root, entries),
        "csv": lambda: _find_tables(root, entries, "csv"),
        "parquet": lambda: _find_tables(root, entries, "parquet"),
        "imagefolder": lambda: _find_imagefolder(root, []) if not prefix else None,
    }
    wanted = {"emnist": "idx"}.get(layout, layout)
    found = {k: f for k, get in finders.items() if wanted in (None, k) and (f := get())}
    if not found:
        what = f"{root}/{prefix}*" if prefix else str(root)
        looked = f"no {layout} files" if layout else "looked for " + ", ".join(LAYOUTS)
        raise UserError(f"{what}: no dataset found ({looked})")
    if len(found) > 1:
        raise UserError(f"{path}: holds data in more than one layout ({', '.join(found)}); say which, "
                        f"e.g. dataset = \"{next(iter(found))}:{path}\"")
    return next(iter(found.values()))


def sidecar_classes(root: Path) -> tuple[str, ...] | None:
    """Class names from classes.txt (one a line) or classes.json (a list) in root."""
    txt, js = root / "classes.txt", root / "classes.json"
    try:
        if txt.is_file():
            names = [n.strip() for n in txt.read_text(encoding="utf-8").splitlines() if n.strip()]
        elif js.is_file():
            names = json.loads(js.read_text(encoding="utf-8"))
        else:
            return None
    except (OSError, ValueError) as e:
        raise UserError(f"{root}: unreadable classes.txt/classes.json ({e})") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise UserError(f"{root}: classes.json must be a list of names")
    return tuple(names)
