"""Use what was trained: load a stored run, predict images (read by `prediction_inputs.py`),
write a Kaggle submission, export, reproduce."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from . import layout, store
from .config import RunConfig
from .errors import UserError
from .evaluate import logits
from .model import StackedMLP, init_member
from .prediction_inputs import (  # noqa: F401  (re-exported: predict's inputs)
    as_pixels,
    load_inputs,
    mnist_form,
    prepare,
    read_image,
    read_npy,
)


def find_run(run: str, out: str | Path = "out") -> Path:
    """RUN = a run folder, or a run id (or unique prefix) under OUT/runs/."""
    path = Path(run)
    if (path / layout.CONFIG).is_file():
        return path
    runs = layout.runs(out)
    matches = sorted(p for p in runs.glob(f"{run}*") if (p / layout.METRICS).is_file()) \
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
    weights = store.read_tensors(folder / layout.WEIGHTS)
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
# inputs (prediction_inputs.py) and predictions


def predict(model: StackedMLP, x_u8: np.ndarray, top: int = 3) -> list[list[tuple[int, float]]]:
    """Top-k (class, probability) per image of uint8 [N, width] (`prepare` makes them)."""
    if x_u8.shape[1] != model.widths[0]:
        raise UserError(f"images of {x_u8.shape[1]} pixels; this model takes {model.widths[0]}")
    z = logits(model, torch.from_numpy(np.array(x_u8, copy=not x_u8.flags.writeable)))[0]
    probs = torch.softmax(z, -1)
    p, idx = probs.topk(min(top, probs.shape[1]), dim=-1)
    return [[(int(i), float(q)) for i, q in zip(ri, rp, strict=True)]
            for ri, rp in zip(idx.tolist(), p.tolist(), strict=True)]


def class_names(folder: Path, cfg: RunConfig) -> tuple[str, ...]:
    """The run's class names: stored with its metrics (`classes`), else the registered
    dataset's, else the class indices."""
    from .data import DATASETS

    try:
        stored = json.loads((folder / layout.METRICS).read_text()).get("classes")
    except (OSError, ValueError, AttributeError):
        stored = None
    if isinstance(stored, list) and len(stored) >= cfg.widths[-1] and all(isinstance(c, str) for c in stored):
        return tuple(stored)
    spec = DATASETS.get(cfg.dataset)
    return spec.classes if spec else tuple(str(i) for i in range(cfg.widths[-1]))


def kaggle_csv(labels) -> bytes:
    """A Kaggle submission: `ImageId,Label`, ImageId counted from 1 in input order, Label the
    predicted class index."""
    rows = "".join(f"{i},{int(c)}\n" for i, c in enumerate(labels, 1))
    return ("ImageId,Label\n" + rows).encode()


def write_to(dest: str, body: bytes) -> Path:
    """body into the file dest, whole or not at all (a temporary file renamed; a link the user
    made is written through to its target, never replaced)."""
    import os

    target = Path(os.path.realpath(dest)) if Path(dest).is_symlink() else Path(dest)
    if not target.parent.is_dir():
        raise UserError(f"--to {dest}: the folder {target.parent} does not exist")
    if target.is_dir():
        raise UserError(f"--to {dest}: is a folder; name the file to write")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(body)
        tmp.replace(target)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return Path(dest)


# ---------------------------------------------------------------------------------------------
# export


def export(folder: Path, fmt: str, dest: Path | str | None = None,
           params: tuple[str, str] = ("--format", "--to")) -> Path | str:
    """A standalone model taking float [N, 784] pixels in [0, 1] (pixel / 255) and returning
    logits [N, classes]: TorchScript (.pt) or ONNX (.onnx). dest: a file (a link the user made is
    written through to its target, never replaced), "-" for standard output (binary), or None:
    model.<ext> in the run folder (never through a link planted there). Returns where it went.
    params: how errors name fmt and dest (the CLI's flags; Run.export's parameters)."""
    import io
    import sys

    from . import safefs

    if fmt not in EXPORTERS:
        raise UserError(f"{params[0]} {fmt!r} is not one of: {', '.join(EXPORTERS)}")
    to_stdout = isinstance(dest, str) and dest == "-"
    if to_stdout and sys.stdout.isatty():
        raise UserError("--to -: standard output is a terminal; redirect it to a file or a pipe")
    target = None if dest is None or to_stdout else _export_target(Path(dest), params[1])
    _, model = load_model(folder)
    net = model.member(0).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch flags TorchScript and its ONNX path as legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        EXPORTERS[fmt][1](net, model.widths[0], buf)
    if to_stdout:
        sys.stdout.flush()
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        return "-"
    if target is None:  # inside OUT: no link below OUT/runs is followed
        target = folder / f"model.{EXPORTERS[fmt][0]}"
        safefs.write_atomic(target, buf.getvalue(), folder.parent if folder.parent.name == layout.RUNS
                            else folder)
        return target
    safefs.write_atomic(target, buf.getvalue())
    return Path(dest)


def _export_target(dest: Path, param: str = "--to") -> Path:
    """The regular file `--to` names: a link is followed to its target (which is replaced, the
    link kept); a folder, a device, a FIFO or /dev/stdout is refused, never replaced."""
    import os
    import stat

    try:
        mode = os.stat(dest).st_mode  # through links: what would be written
    except FileNotFoundError:
        mode = None  # a new file (or a link to one)
    except OSError as e:
        raise UserError(f"{param} {dest}: {e.strerror}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise UserError(f"{param} {dest}: is a folder; name the file to write")
    if mode is not None and not stat.S_ISREG(mode):
        raise UserError(f"{param} {dest}: not a regular file (a device, FIFO or terminal is never "
                        "replaced)" + ("; use --to - to write to standard output" * (param == "--to")))
    target = Path(os.path.realpath(dest)) if dest.is_symlink() else dest
    if not target.parent.is_dir():
        raise UserError(f"{param} {dest}: the folder {target.parent} does not exist")
    return target


def _torchscript(net, n_in: int, f) -> None:
    torch.jit.save(torch.jit.trace(net, torch.rand(2, n_in)), f)


def _onnx(net, n_in: int, f) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise UserError("ONNX export needs the onnx extra: pip install 'mlplab[onnx]'") from None
    torch.onnx.export(net, (torch.rand(2, n_in),), f, dynamo=False,
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
        found = [layout.run(out, i) / layout.CONFIG for i in group_ids]
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
