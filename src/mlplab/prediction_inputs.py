"""What `predict` (CLI and `Run.predict`) reads: image files, .npy batches, pixel CSV and
Parquet files (Kaggle's test.csv), and arrays — all under the one pixel convention
(`pixels.py`: uint8 0–255 or floats in [0, 1]).

Image files for a 784-input model are turned into MNIST form the way MNIST itself was made:
grayscale, white digit on black (a light background is inverted), cropped to the digit, scaled
so its longer side is 20 pixels, and placed in a 28x28 frame with its center of mass at the
center. For a model of another input width, an image must already have that many pixels
(H×W = width); it is made grayscale and used as it is. Images over Pillow's decompression-bomb
limit (about 89.5 megapixels) are refused before they are decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import parquet, tables
from .bounded import open_image
from .bounded import read_npy as _read_npy
from .errors import UserError
from .pixels import to_u8

TABLES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit (its default), whatever it is set to


def mnist_form(gray: np.ndarray) -> np.ndarray:
    """Any grayscale image (H, W), either polarity -> uint8 [784] in MNIST form."""
    from PIL import Image

    img = gray.astype(np.float64)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    background = float(np.median(border))
    if background > 127:  # dark digit on light paper: make it white on black
        img, background = 255.0 - img, 255.0 - background
    img = np.clip(img - background, 0, None)
    if img.max() <= 0:
        raise UserError("the image is blank: no digit found")
    img *= 255.0 / img.max()
    ys, xs = np.nonzero(img > 0.1 * 255)
    img = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = img.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    small = np.clip(np.asarray(Image.fromarray(img.astype(np.float32)).resize(size, resample)),
                    0, 255)
    # Center of mass to (14, 14) in pixel-index coordinates: where MNIST puts it (measured:
    # 13.99, 14.00 over the test set).
    ys, xs = np.indices(small.shape)
    total = small.sum()
    cy, cx = (ys * small).sum() / total, (xs * small).sum() / total
    top = int(np.clip(round(14 - cy), 0, 28 - small.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - small.shape[1]))
    frame = np.zeros((28, 28))
    frame[top:top + small.shape[0], left:left + small.shape[1]] = small
    return np.rint(frame).astype(np.uint8).reshape(784)


def read_image(path: Path, width: int = 784) -> np.ndarray:
    """PNG/JPEG/... file -> uint8 [width]: MNIST form for 784 inputs, else the image as it is."""
    from PIL import Image

    im = open_image(path, str(path), MAX_PIXELS)
    try:
        if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
            # transparent background: composite on white, so it reads as paper
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im.convert("RGBA"))
        if im.mode not in ("L", "1", "P", "RGB", "RGBA", "CMYK", "YCbCr"):
            raise UserError(f"{path}: image mode {im.mode} (16-bit or float) is not supported")
        gray = np.asarray(im.convert("L"))
    finally:
        im.close()
    if width == 784:
        return mnist_form(gray)
    if gray.size != width:
        raise UserError(f"{path}: {gray.shape[1]}×{gray.shape[0]} pixels; the model takes "
                        f"images of {width} pixels")
    return gray.reshape(width)


def read_npy(path: Path, width: int = 784) -> np.ndarray:
    """A .npy batch [N, width] or [N, H, W] under the pixel convention -> uint8 [N, width]; its
    header is checked before anything is allocated, and it is never unpickled."""
    return as_pixels(_read_npy(path), str(path), width)


def as_pixels(arr, where: str = "images", width: int = 784) -> np.ndarray:
    """An array-like [N, width] or [N, H, W] with H×W = width (or one image without N) of uint8
    pixels or floats in [0, 1] -> uint8 [N, width]; a UserError naming `where` otherwise."""
    if hasattr(arr, "detach"):  # a torch tensor
        arr = arr.detach().cpu().numpy()
    arr = np.asarray(arr)
    if arr.ndim == 1 or (arr.ndim == 2 and arr.size == width and arr.shape[1] != width):
        arr = arr[None]  # one image
    if not (arr.ndim in (2, 3) and int(np.prod(arr.shape[1:])) == width) or len(arr) == 0:
        side = int(round(width ** 0.5))
        square = f" or [N, {side}, {side}]" if side * side == width else ""
        raise UserError(f"{where}: shape {list(arr.shape)}; expected [N, {width}]{square} "
                        "(N at least 1)")
    return to_u8(arr.reshape(len(arr), width), where)


def load_inputs(paths: list[str], width: int = 784) -> tuple[list[str], np.ndarray]:
    """Names and uint8 [N, width] for image files, .npy batches and pixel tables, in order."""
    names, rows = [], []
    for p in map(Path, paths):
        if not p.is_file():
            raise UserError(f"{p}: no such file")
        low = p.name.lower()
        if low.endswith(".npy"):
            batch = read_npy(p, width)
        elif low.endswith(TABLES):
            reader = parquet.read_parquet if low.endswith(".parquet") else tables.read_csv
            batch = reader(p, label="optional", width=width).x
        else:
            names.append(p.name)
            rows.append(read_image(p, width)[None])
            continue
        names += [f"{p.name}[{i}]" for i in range(len(batch))]
        rows.append(batch)
    return names, np.concatenate(rows) if rows else np.zeros((0, width), np.uint8)
