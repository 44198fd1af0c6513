"""What `predict` (CLI and `Run.predict`) reads — image files, .npy batches, pixel CSV and
Parquet files (Kaggle's test.csv), numpy arrays and torch tensors of any size, PIL images, and
lists of them — and the one path every one of them takes to the model's input.

1. Pixels: the one convention (`pixels.py`): uint8 0–255 (any integer type) or floats in [0, 1].
2. Grayscale: Pillow's luma rule L = 0.299 R + 0.587 G + 0.114 B; transparency counts as white
   paper. Arrays: [H, W] is one grayscale image, [H, W, 3|4] one RGB/RGBA image, [N, H, W],
   [N, H, W, 3|4] and [N, width] are batches.
3. MNIST form (784-input models only; `mnist_form`), the way MNIST itself was made: white digit
   on black (a light background, judged by the median of the border pixels, is inverted),
   cropped to the digit, scaled so its longer side is 20 pixels, and placed in a 28x28 frame with
   its center of mass at the center.

`preprocess` chooses step 3: True always, False never (the images must already be 28×28),
None (the default) unless the images already look like MNIST data — exactly the model's input
size (28×28, or [N, 784] rows) with a dark border (median ≤ 127, MNIST's polarity). That keeps
rows of MNIST-like datasets and Kaggle's test.csv unchanged, and brings drawings of any size or
polarity to MNIST form. One array (or file) is one decision, taken on all its images together.
A model of another input width takes images of exactly its size, grayscale, as they are.
Images over Pillow's decompression-bomb limit (about 89.5 megapixels) are refused before they
are decoded. What comes out is always a fresh, writable uint8 [N, width] array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import parquet, tables
from .bounded import open_image
from .bounded import read_npy as _read_npy
from .errors import UserError
from .pixels import gray, to_u8

TABLES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit (its default), whatever it is set to
MNIST_WIDTH = 784


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


def pil_gray(im, where: str) -> np.ndarray:
    """A Pillow image -> uint8 [H, W] by luma; a transparent background reads as white paper."""
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im.convert("RGBA"))
    return gray(im, where)


def read_image(path: Path, width: int = 784, preprocess: bool | None = None) -> np.ndarray:
    """PNG/JPEG/... file -> uint8 [width] (see the module's docstring for the path it takes)."""
    im = open_image(path, str(path), MAX_PIXELS)
    try:
        g = pil_gray(im, str(path))
    finally:
        im.close()
    return to_model(g[None], str(path), width, preprocess)[0]


def read_npy(path: Path, width: int = 784, preprocess: bool | None = None) -> np.ndarray:
    """A .npy batch or image -> uint8 [N, width]; its header is checked before anything is
    allocated, and it is never unpickled."""
    return to_model(gray_batch(_read_npy(path), str(path), width), str(path), width, preprocess)


def as_pixels(arr, where: str = "images", width: int = 784) -> np.ndarray:
    """An array-like [N, width] or [N, H, W] with H×W = width (or one image without N) of uint8
    pixels or floats in [0, 1] -> uint8 [N, width], as it is; a UserError naming `where`
    otherwise."""
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
    return np.array(to_u8(arr.reshape(len(arr), width), where), copy=True)


def gray_batch(arr, where: str, width: int) -> np.ndarray:
    """Any array-like of images (module docstring, step 2) -> uint8 grayscale [N, H, W] or
    [N, width]."""
    if hasattr(arr, "detach"):  # a torch tensor
        arr = arr.detach().cpu().numpy()
    arr = np.asarray(arr)
    if arr.size == 0:
        raise UserError(f"{where}: shape {list(arr.shape)}: no images (N at least 1)")
    colour = arr.ndim >= 3 and arr.shape[-1] in (3, 4) and \
        (arr.ndim == 4 or arr.shape[1] * arr.shape[2] != width)
    if (arr.ndim == 1 and arr.size == width) or (arr.ndim == 2 and arr.shape[1] != width) \
            or (arr.ndim == 3 and colour):
        arr = arr[None]  # one image
    elif not (arr.ndim in (2, 3) or (arr.ndim == 4 and colour)):
        raise UserError(f"{where}: shape {list(arr.shape)}; expected an image [H, W] or "
                        f"[H, W, 3|4] (RGB/RGBA), a batch [N, H, W], [N, H, W, 3|4] or "
                        f"[N, {width}], or a list of them")
    u8 = to_u8(arr, where)
    if colour:
        from PIL import Image

        u8 = np.stack([pil_gray(Image.fromarray(np.ascontiguousarray(im)), where) for im in u8])
    return u8


def to_model(g: np.ndarray, where: str, width: int, preprocess: bool | None) -> np.ndarray:
    """Grayscale uint8 [N, H, W] or [N, width] -> a fresh uint8 [N, width]: MNIST form or as it
    is, by `preprocess` (module docstring, step 3)."""
    n = len(g)
    fits = g.shape[1] == width if g.ndim == 2 else g.shape[1] * g.shape[2] == width
    mnist = width == MNIST_WIDTH
    if mnist and preprocess is None:
        preprocess = not (fits and mnist_polarity(g.reshape(n, 28, 28)))
    if not (mnist and preprocess):
        if not fits:
            h, w = (1, g.shape[1]) if g.ndim == 2 else g.shape[1:]
            hint = "; leave preprocessing on to bring any size to 28×28" * (preprocess is False)
            raise UserError(f"{where}: {w}×{h} pixels; the model takes images of {width} "
                            f"pixels{hint}")
        return np.array(g.reshape(n, width), dtype=np.uint8, copy=True)
    frames = g.reshape(n, 28, 28) if g.ndim == 2 else g
    out = np.empty((n, width), np.uint8)
    for i, frame in enumerate(frames):
        try:
            out[i] = mnist_form(frame)
        except UserError as e:
            raise UserError(f"{where}" + f"[{i}]" * (n > 1) + f": {e}") from None
    return out


def mnist_polarity(frames: np.ndarray) -> bool:
    """Whether 28×28 frames have MNIST's dark border (the rule `mnist_form` inverts by)."""
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], 1)
    return float(np.median(border)) <= 127


def check_preprocess(preprocess, width: int) -> None:
    if preprocess is not None and not isinstance(preprocess, bool):
        raise UserError(f"preprocess={preprocess!r}; expected True, False or None (automatic)")
    if preprocess and width != MNIST_WIDTH:
        raise UserError(f"preprocess=True brings images to MNIST form (28×28); this model takes "
                        f"{width} pixels: pass images of that size with preprocessing off")


def _is_item(x) -> bool:
    from PIL import Image

    return isinstance(x, str | Path | np.ndarray | Image.Image) or hasattr(x, "detach")


def prepare(images, width: int = 784, preprocess: bool | None = None) -> tuple[list[str], np.ndarray]:
    """Anything `predict` takes (module docstring) -> (names, uint8 [N, width]), in order."""
    from PIL import Image

    check_preprocess(preprocess, width)
    many = isinstance(images, list | tuple)
    if many and not images:
        raise UserError("images: an empty list; pass at least one image")
    items = list(images) if many and all(map(_is_item, images)) else [images]
    names, rows = [], []
    for i, item in enumerate(items):
        where = f"images[{i}]" if len(items) > 1 or many else "images"
        if isinstance(item, str | Path):
            n, x = load_inputs([str(item)], width, preprocess)
        elif isinstance(item, Image.Image):
            n, x = [where], to_model(pil_gray(item, where)[None], where, width, preprocess)
        else:
            x = to_model(gray_batch(item, where, width), where, width, preprocess)
            n = [where] if len(x) == 1 else [f"{where}[{j}]" for j in range(len(x))]
        names += n
        rows.append(x)
    return names, np.concatenate(rows)


def load_inputs(paths: list[str], width: int = 784,
                preprocess: bool | None = None) -> tuple[list[str], np.ndarray]:
    """Names and uint8 [N, width] for image files, .npy batches and pixel tables, in order."""
    check_preprocess(preprocess, width)
    names, rows = [], []
    for p in map(Path, paths):
        if not p.is_file():
            raise UserError(f"{p}: no such file")
        low = p.name.lower()
        if low.endswith(".npy"):
            batch = read_npy(p, width, preprocess)
        elif low.endswith(TABLES):
            reader = parquet.read_parquet if low.endswith(".parquet") else tables.read_csv
            batch = to_model(reader(p, label="optional", width=width).x, str(p), width, preprocess)
        else:
            names.append(p.name)
            rows.append(read_image(p, width, preprocess)[None])
            continue
        names += [f"{p.name}[{i}]" for i in range(len(batch))]
        rows.append(batch)
    return names, np.concatenate(rows) if rows else np.zeros((0, width), np.uint8)
