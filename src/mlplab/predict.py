"""Use what was trained: load a stored run, predict images, export, reproduce.

Images are turned into MNIST form the way MNIST itself was made: grayscale, white digit on
black (a light background is inverted), cropped to the digit, scaled so its longer side is 20
pixels, and placed in a 28x28 frame with its center of mass at the center.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from . import store
from .config import RunConfig
from .errors import UserError
from .evaluate import logits
from .model import StackedMLP, init_member


def find_run(run: str, out: str | Path = "out") -> Path:
    """RUN = a run folder, or a run id (or unique prefix) under OUT/runs/."""
    path = Path(run)
    if (path / "config.json").is_file():
        return path
    runs = Path(out) / "runs"
    matches = sorted(p for p in runs.glob(f"{run}*") if (p / "metrics.json").is_file()) \
        if runs.is_dir() and run.isalnum() else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UserError(f"run id {run!r} is ambiguous in {runs}: "
                        f"{', '.join(p.name for p in matches[:5])}")
    raise UserError(f"run {run!r}: not a run folder, and no finished run with that id in {runs} "
                    "(pass --out DIR or the folder itself)")


def load_model(folder: Path) -> tuple[RunConfig, StackedMLP]:
    """A stored run as a K = 1 StackedMLP in eval mode, weights read through safetensors and
    checked against the config's shapes."""
    run = store.read_run(folder)
    cfg = run["config"]
    weights = store.read_tensors(folder / "weights.safetensors")
    expected = {k: v.shape for k, v in init_member(cfg).items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != {k: tuple(s) for k, s in expected.items()}:
        missing = sorted(set(expected) - set(got))
        wrong = sorted(k for k in set(expected) & set(got) if tuple(expected[k]) != got[k])
        raise UserError(f"{folder}/weights.safetensors does not match its config.json "
                        f"({cfg.architecture}, batch_norm={cfg.batch_norm}): "
                        f"missing {missing or 'none'}, wrong shape {wrong or 'none'}")
    if any(not torch.isfinite(v).all() for v in weights.values()) and \
            run["metrics"].get("status") != "diverged":
        raise UserError(f"{folder}/weights.safetensors holds non-finite values")
    model = StackedMLP([cfg])
    model.load_member_state(0, {k: v.float() for k, v in weights.items()})
    model.eval()
    return cfg, model


# ---------------------------------------------------------------------------------------------
# images


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


def read_image(path: Path) -> np.ndarray:
    """PNG/JPEG/... file -> uint8 [784] in MNIST form."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or "transparency" in im.info:
                # transparent background: composite on white, so it reads as paper
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im.convert("RGBA"))
            gray = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"{path}: cannot decode as an image ({e})") from None
    return mnist_form(gray)


def read_npy(path: Path) -> np.ndarray:
    """A .npy batch [N, 784] or [N, 28, 28]: uint8 pixels or floats in [0, 1] -> uint8 [N, 784]."""
    try:
        arr = np.load(path, allow_pickle=False)  # no pickle for user files
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable .npy array without pickled objects ({e})") from None
    return as_pixels(arr, str(path))


def as_pixels(arr, where: str = "images") -> np.ndarray:
    """An array-like [N, 784], [N, 28, 28] (or one image [784] / [28, 28]) of uint8 pixels or
    floats in [0, 1] -> uint8 [N, 784]; a UserError naming `where` otherwise."""
    arr = np.asarray(arr.detach().cpu() if isinstance(arr, torch.Tensor) else arr)
    if arr.shape in ((784,), (28, 28)):
        arr = arr[None]
    if arr.ndim == 2 and arr.shape[1] == 784:
        pass
    elif arr.ndim == 3 and arr.shape[1:] == (28, 28):
        arr = arr.reshape(len(arr), 784)
    else:
        raise UserError(f"{where}: shape {arr.shape}; expected [N, 784] or [N, 28, 28]")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise UserError(f"{where}: values must be finite numbers")
    if arr.min() < 0 or arr.max() > 255:
        raise UserError(f"{where}: values must be uint8 pixels or floats in [0, 1]")
    return np.rint(arr * 255 if arr.max() <= 1.0 else arr).astype(np.uint8)


def load_inputs(paths: list[str]) -> tuple[list[str], np.ndarray]:
    """Names and uint8 [N, 784] for image files and .npy batches, in order."""
    names, rows = [], []
    for p in map(Path, paths):
        if not p.is_file():
            raise UserError(f"{p}: no such file")
        if p.suffix == ".npy":
            batch = read_npy(p)
            names += [f"{p.name}[{i}]" for i in range(len(batch))]
            rows.append(batch)
        else:
            names.append(p.name)
            rows.append(read_image(p)[None])
    return names, np.concatenate(rows) if rows else np.zeros((0, 784), np.uint8)


def predict(model: StackedMLP, x_u8: np.ndarray, top: int = 3) -> list[list[tuple[int, float]]]:
    """Top-k (class, probability) per image."""
    z = logits(model, torch.from_numpy(x_u8))[0]
    probs = torch.softmax(z, -1)
    p, idx = probs.topk(min(top, probs.shape[1]), dim=-1)
    return [[(int(i), float(q)) for i, q in zip(ri, rp, strict=True)]
            for ri, rp in zip(idx.tolist(), p.tolist(), strict=True)]


# ---------------------------------------------------------------------------------------------
# export


def export(folder: Path, fmt: str, dest: Path | None = None) -> Path:
    """A standalone model taking float [N, 784] pixels in [0, 1] (pixel / 255) and returning
    logits [N, classes]: TorchScript (.pt) or ONNX (.onnx)."""
    if fmt not in EXPORTERS:
        raise UserError(f"--format {fmt!r} is not one of: {', '.join(EXPORTERS)}")
    if dest is not None and not dest.parent.is_dir():
        raise UserError(f"--to {dest}: the folder {dest.parent} does not exist")
    _, model = load_model(folder)
    net = model.member(0).eval()
    dest = dest or folder / f"model.{EXPORTERS[fmt][0]}"
    tmp = dest.with_name(f".{dest.name}.tmp")
    with warnings.catch_warnings():  # torch flags TorchScript and its ONNX path as legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        EXPORTERS[fmt][1](net, model.widths[0], tmp)
    tmp.replace(dest)
    return dest


def _torchscript(net, n_in: int, path: Path) -> None:
    torch.jit.trace(net, torch.rand(2, n_in)).save(str(path))


def _onnx(net, n_in: int, path: Path) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise UserError("ONNX export needs the onnx extra: pip install 'mlplab[onnx]'") from None
    torch.onnx.export(net, (torch.rand(2, n_in),), str(path), dynamo=False,
                      input_names=["pixels"], output_names=["logits"],
                      dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}})


EXPORTERS = {"torchscript": ("pt", _torchscript), "onnx": ("onnx", _onnx)}


# ---------------------------------------------------------------------------------------------
# reproduce

TOLERANCE = {"test_acc": 0.005, "val_acc": 0.005}  # across devices / group compositions


def reproduce(folder: Path, out: str | Path, device: str = "auto") -> dict:
    """Retrain a stored run from its config and seed, exactly as it was trained: in a group of
    the same members when they are all stored in OUT (identical on the same device), else alone
    (equal within TOLERANCE). Returns the stored and new metrics and their differences."""
    from . import data as data_mod
    from .train import resolve_device, train_group
    from .work import final_metrics

    run = store.read_run(folder)
    cfg, stored = run["config"], run["metrics"]
    dev = resolve_device(device)
    members, how = [cfg], "alone"
    group_ids = stored.get("group") or []
    if len(group_ids) > 1:
        found = [store.run_dir(Path(out), i) / "config.json" for i in group_ids]
        if all(p.is_file() for p in found):
            members = [RunConfig.model_validate_json(p.read_text()) for p in found]
            how = f"in its group of {len(members)}"
    ds = data_mod.load(cfg.dataset)
    splits = data_mod.split(ds, cfg.validation, cfg.val_size, cfg.train_size)
    results = train_group(members, splits, dev)
    metrics, _ = final_metrics(results, splits, len(ds.classes), dev)
    new = metrics[[m.run_id for m in members].index(cfg.run_id)]
    keys = ("val_loss", "val_acc", "test_loss", "test_acc", "epochs_run")
    diff = {k: float(new[k]) - float(stored[k]) for k in keys}
    same_device = stored.get("device") == str(dev)
    exact = all(d == 0 for d in diff.values())
    within = all(abs(diff[k]) <= t for k, t in TOLERANCE.items())
    return {"run_id": cfg.run_id, "how": how, "device": str(dev), "stored_device": stored.get("device"),
            "stored": {k: stored[k] for k in keys}, "new": {k: new[k] for k in keys}, "diff": diff,
            "identical": exact, "within_tolerance": within, "same_device": same_device,
            "tolerance": TOLERANCE}


def describe(result: dict) -> str:
    """One line verdict for the CLI."""
    if result["identical"]:
        return "identical: every final metric matches exactly"
    worst = max(abs(result["diff"][k]) for k in TOLERANCE)
    verdict = "within" if result["within_tolerance"] else "OUTSIDE"
    return (f"{verdict} tolerance (largest accuracy difference {worst:.4f}; allowed "
            f"{max(TOLERANCE.values())}) — retrained {result['how']} on {result['device']}, "
            f"stored on {result['stored_device']}")


def to_json(obj) -> str:
    """JSON any parser reads: non-finite floats (a diverged run's probabilities) become null
    (json.dumps would write bare NaN, which is not JSON)."""
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(obj), indent=2, allow_nan=False, default=str)
