"""Epoch checkpoints of a fused group: everything the training loop needs to go on exactly where it
stopped (weights, optimizer state, BatchNorm buffers, every member's data-order generator and the
dropout generator, histories and early-stopping state), written at the end of an epoch at most
every `every` seconds, atomically (temporary file + rename), as safetensors + a JSON header (no
pickle). A rerun after Ctrl-C, kill -9, a full disk or a lost Dask worker resumes the group from
it; the driver deletes it once the group's runs are committed.

The state itself (`snapshot`, `resume`) is here too: what a checkpoint holds is its format.

One file per group: OUT/checkpoints/<key>.safetensors, the key being a hash of the members' run
ids in order (the same group planned again finds it, on whatever device it resumes).

A checkpoint that does not fit its group (unreadable, written by another mlplab version, a
missing tensor, another shape: run ids are stable across versions, so such a file is found) is
set aside as <key>.safetensors.bad with one warning line, and the group starts from its first
epoch. It is checked against the group's configurations, which it carries (their run ids must be
the group's) before anything is restored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from . import safefs
from .config import RunConfig
from .errors import UserError
from .model import StackedMLP
from .optim import make_optimizer
from .safetext import printable
from .store import HISTORY_FIELDS

FORMAT = 2  # what a checkpoint holds; another value (or another mlplab version) does not fit
log = logging.getLogger("mlplab")


def path_for(folder: str | Path, run_ids: list[str]) -> Path:
    """The checkpoint file of the group with these members, in this order."""
    return Path(folder) / f"{hashlib.sha256(','.join(run_ids).encode()).hexdigest()[:16]}.safetensors"


@dataclass
class Checkpointer:
    """Where one group's checkpoint lives and how often it is written (seconds; 0: every epoch)."""

    path: Path
    every: float = 60.0
    last: float = field(default_factory=time.perf_counter)
    failed: bool = False  # a checkpoint that cannot be written never stops training
    root: Path | None = None  # no link below it is followed (default: the file's folder)

    @classmethod
    def for_group(cls, folder: str | Path, run_ids: list[str], every: float) -> Checkpointer:
        """OUT/checkpoints/<key>: a link planted at OUT/checkpoints is never written through."""
        return cls(path_for(folder, run_ids), every, root=Path(folder).parent)

    def due(self) -> bool:
        return not self.failed and time.perf_counter() - self.last >= self.every

    def save(self, tensors: dict[str, torch.Tensor], meta: dict, strict: bool = False) -> str | None:
        """Write atomically; None, or the reason it could not be written (training goes on).
        strict: raise instead (a group paused at a rung cannot go on without it)."""
        self.last = time.perf_counter()
        try:
            data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                        metadata={"mlplab": json.dumps(meta)})
            safefs.write_atomic(self.path, data, self.root)
        except (OSError, SafetensorError, UserError) as e:
            if strict:
                raise
            self.failed = True
            return str(e).splitlines()[0]
        return None

    def load(self, run_ids: list[str]) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The checkpoint of exactly these members, or None: absent, or one that does not fit
        (set aside with a warning line); then the group starts from its first epoch."""
        if not os.path.lexists(self.path):
            return None
        try:
            if os.path.islink(self.path):
                raise ValueError("a symbolic link")
            meta, shapes = _header(self.path)  # the tensors are read only once they fit
            why = None if meta.get("run_ids") == run_ids else "another group's checkpoint"
            why = why or misfit(shapes, meta)
            if why is None:
                return load_file(str(self.path)), meta
        except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as e:
            why = f"unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        self.set_aside(why)
        return None

    def set_aside(self, why: str) -> None:
        """Rename the checkpoint to <name>.bad (kept for a look, never read again) and say so."""
        bad = self.path.with_name(self.path.name + ".bad")
        with contextlib.suppress(OSError, UserError):
            with safefs.folder(self.path.parent) as fd:
                os.replace(self.path.name, bad.name, src_dir_fd=fd, dst_dir_fd=fd)
        log.warning("%s", printable(f"checkpoint {self.path} does not fit its group ({why}); set "
                                    f"aside as {bad.name}; the group starts from its first epoch"))


def read_meta(path: Path) -> dict:
    """The JSON header `save` wrote (epoch, run ids, members' histories)."""
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["mlplab"])


def _header(path: Path) -> tuple[dict, dict[str, tuple[tuple[int, ...], str]]]:
    """(meta, name -> (shape, dtype)) from a checkpoint's header alone: nothing is allocated
    from what a file declares before it is known to fit."""
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["mlplab"])
        shapes = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    if not isinstance(meta, dict):
        raise ValueError("its header is not a JSON object")
    return meta, shapes


def remove(folder: str | Path, run_ids: list[str]) -> None:
    """Delete a committed group's checkpoint (and the folder once empty), never through a link."""
    folder = Path(folder)
    with contextlib.suppress(OSError, UserError):  # absent, or a link (refused at the start)
        with safefs.folder(folder.parent) as parent:
            with safefs.folder(folder.parent, (folder.name,), create=False) as fd:
                safefs.remove(fd, path_for(folder, run_ids).name)
            os.rmdir(folder.name, dir_fd=parent)  # fails while other groups' checkpoints are there


def misfit(shapes: dict[str, tuple[tuple[int, ...], str]], meta: dict) -> str | None:
    """Why a checkpoint cannot resume its group (None: it fits): another format or mlplab
    version, configurations that are not the group's, a missing tensor, another shape. shapes:
    each tensor's (shape, safetensors dtype), from the file's header."""
    from . import __version__

    if meta.get("format") != FORMAT or meta.get("mlplab") != __version__:
        by = f"mlplab {meta['mlplab']}" if meta.get("mlplab") else "an older mlplab"
        return (f"written by {by}, checkpoint format {meta.get('format', 1)}; this is mlplab "
                f"{__version__}, format {FORMAT}")
    cfgs = [RunConfig.model_validate(c) for c in meta["configs"]]
    if [c.run_id for c in cfgs] != meta["run_ids"]:
        return "its configurations are not its members'"
    active, members = meta["active"], meta["members"]
    if (not active or sorted(set(active)) != sorted(active) or len(members) != len(cfgs)
            or not all(isinstance(j, int) and 0 <= j < len(cfgs) for j in active)
            or not isinstance(meta["epoch"], int) or meta["epoch"] < 1):
        return "its header is inconsistent"
    for m in members:
        if not all(isinstance(h, dict) and set(HISTORY_FIELDS) <= set(h) for h in m["history"]) \
                or not isinstance(m["status"], str):
            return "a member's history is malformed"
        for k in ("best_epoch", "best_val_loss", "bad_epochs", "train_seconds"):
            float(m[k])  # a number (else TypeError/ValueError: does not fit)
    expected = _shapes(cfgs, active)
    member = {n[len("model."):]: s[1:] for n, s in expected.items() if n.startswith("model.")}
    for name, (shape, _) in shapes.items():
        if name.startswith("member."):
            _, j, n = name.split(".", 2)
            if int(j) not in range(len(cfgs)) or member.get(n) != shape:
                return f"tensor {name} does not fit"
        elif name not in expected and name != "rng.cuda":
            return f"tensor {name} is not part of a checkpoint"
    for name, shape in expected.items():
        if name not in shapes:
            return f"tensor {name} is missing"
        if shapes[name][0] != shape:
            return f"tensor {name} has shape {list(shapes[name][0])}, not {list(shape)}"
        if name.startswith(("rng.", "order.")) and shapes[name][1] != "U8":
            return f"tensor {name} is not a generator state"
    return None


def _shapes(cfgs: list[RunConfig], active: list[int]) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of this group holds, and its shape. Members share all shapes,
    so one member's model and optimizer (cheap) give them; K = the members still computing."""
    k = len(active)
    ref = StackedMLP([cfgs[active[0]]])
    opt = make_optimizer(list(ref.parameters()), [cfgs[active[0]]])
    shapes = {f"model.{n}": (k, *t.shape[1:]) for n, t in ref.state().items()}
    shapes["opt.t"] = tuple(opt.t.shape)
    shapes.update({f"opt.{slot}.{i}": (k, *t.shape[1:]) for slot, ts in opt.state.items()
                   for i, t in enumerate(ts)})
    shapes["rng.cpu"] = tuple(torch.get_rng_state().shape)
    generator = tuple(torch.Generator().get_state().shape)
    shapes.update({f"order.{j}": generator for j in range(len(cfgs))})
    return shapes


# --- what a checkpoint holds: the whole state of a group at the end of an epoch ---------------
def snapshot(model, opt, active, epoch, ids, orders, results) -> tuple[dict, dict]:
    """(tensors, JSON-able meta) of the whole group state at the end of `epoch`."""
    tensors = {f"model.{n}": t for n, t in model.state().items()}
    tensors["opt.t"] = opt.t
    tensors.update({f"opt.{slot}.{i}": t for slot, ts in opt.state.items() for i, t in enumerate(ts)})
    tensors["rng.cpu"] = torch.get_rng_state()
    if model.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(model.device)
    for j, (g, r) in enumerate(zip(orders, results, strict=True)):
        tensors[f"order.{j}"] = g.get_state()
        tensors.update({f"member.{j}.{n}": t for n, t in r.state.items()})
    from . import __version__

    meta = {"format": FORMAT, "mlplab": __version__, "run_ids": ids, "epoch": epoch,
            "configs": [r.cfg.model_dump(mode="json") for r in results],
            "active": active, "members": [
        {"history": r.history, "status": r.status, "best_epoch": r.best_epoch,
         "best_val_loss": r.best_val_loss, "bad_epochs": r.bad_epochs,
         "train_seconds": r.train_seconds} for r in results]}
    return tensors, meta


def resume(saved, cfgs, device, orders, results):
    """The group as `snapshot` saved it: (model, optimizer, active positions, next epoch)."""
    tensors, meta = saved
    active = meta["active"]
    running = [cfgs[j] for j in active]
    model = StackedMLP(running, device)  # parameters in their usual order: the optimizer's slots
    opt = make_optimizer(list(model.parameters()), running)
    with torch.no_grad():
        for n, t in model.state().items():
            t.copy_(tensors[f"model.{n}"])
        opt.t.copy_(tensors["opt.t"])
        for slot, ts in opt.state.items():
            for i, t in enumerate(ts):
                t.copy_(tensors[f"opt.{slot}.{i}"])
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    for j, (g, r, m) in enumerate(zip(orders, results, meta["members"], strict=True)):
        g.set_state(tensors[f"order.{j}"])
        for key in ("history", "status", "best_epoch", "best_val_loss", "bad_epochs", "train_seconds"):
            setattr(r, key, m[key])
        prefix = f"member.{j}."
        r.state = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
    return model, opt, active, meta["epoch"] + 1
