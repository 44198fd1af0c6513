"""Folders of images, torchvision's ImageFolder layout: `root/train/<class>/*.png` and
`root/test/<class>/*.png` (or `root/<class>/*.png` alone, without a test split). Class names are
the folder names, sorted; images are ordered by file name across classes (numbers in names
compare as numbers), so files named by their index keep their order. Any fixed size works; RGB
and palette images become grayscale by `pixels.gray` (ITU-R 601-2 luma, as Pillow's "L").
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .bounded import MAX_CLASSES, MAX_DATA_PIXELS, gib, max_bytes, open_image
from .errors import UserError
from .pixels import gray

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
TRAIN_DIRS, TEST_DIRS = ("train", "training"), ("test", "testing")


def images_in(folder: Path) -> list[Path]:
    """Image files directly in folder (hidden files and other suffixes are not images)."""
    return [p for p in folder.iterdir()
            if p.suffix.lower() in SUFFIXES and not p.name.startswith(".") and p.is_file()]


def class_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def split_roots(root: Path) -> tuple[Path, Path | None] | None:
    """(train root, test root or None) of an ImageFolder tree at root, or None if it is not one."""
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    train = next((subdirs[n] for n in TRAIN_DIRS if n in subdirs), None)
    if train is not None:
        return train, next((subdirs[n] for n in TEST_DIRS if n in subdirs), None)
    dirs = class_dirs(root)
    return (root, None) if dirs and any(images_in(d) for d in dirs[:50]) else None


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name.lower()))


def listing(root: Path, classes: tuple[str, ...] | None = None
            ) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """[(file, class index)] in file-name order, and the class names (from root's folders, or
    the train split's `classes` for a test split: a folder not among them is an error)."""
    dirs = class_dirs(root)
    names = tuple(d.name for d in dirs)
    if not dirs:
        raise UserError(f"{root}: no class folders (expected {root}/<class>/<images>)")
    if len(dirs) > MAX_CLASSES:
        raise UserError(f"{root}: {len(dirs)} class folders; at most {MAX_CLASSES} classes")
    if classes is not None and (extra := [n for n in names if n not in classes]):
        raise UserError(f"{root}: class folder {extra[0]!r} is not among the training classes")
    index = {n: i for i, n in enumerate(classes or names)}
    files = []
    for d in dirs:
        found = images_in(d)
        if not found:
            raise UserError(f"{d}: an empty class folder (no {', '.join(SUFFIXES[:3])}… images)")
        files += [(p, index[d.name]) for p in found]
    files.sort(key=lambda f: (_natural(f[0].name), f[1]))
    return files, classes or names


def read(root: Path, classes: tuple[str, ...] | None = None):
    """uint8 images [N, H*W], labels [N], (H, W) and the class names of one split's folder."""
    files, names = listing(root, classes)
    x, shape, first = None, None, None
    for i, (path, _) in enumerate(files):
        im = gray(open_image(path, str(path), MAX_DATA_PIXELS), str(path))
        if x is None:
            shape, first = im.shape, path
            if len(files) * im.size > max_bytes():
                raise UserError(f"{root}: {len(files):,} images of {shape[0]}×{shape[1]} exceed the "
                                f"{gib(max_bytes())} limit (MLPLAB_MAX_DATA_BYTES)")
            x = np.empty((len(files), im.size), np.uint8)
        elif im.shape != shape:
            raise UserError(f"{path} is {im.shape[0]}×{im.shape[1]}, {first} is {shape[0]}×{shape[1]}: "
                            "all images of a dataset must have one size")
        x[i] = im.reshape(-1)
    y = np.array([c for _, c in files], dtype=np.int64)
    return x, y, tuple(shape), names


def stat_key(root: Path) -> list:
    """What the cache key sees of a folder: every image's relative path, size and mtime (reading
    every file's bytes would cost as much as decoding them)."""
    out = []
    for d in class_dirs(root):
        for p in sorted(images_in(d)):
            st = p.stat()
            out.append((f"{d.name}/{p.name}", st.st_size, st.st_mtime_ns))
    return out
