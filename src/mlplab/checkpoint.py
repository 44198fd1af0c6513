"""Epoch checkpoints of a fused group: everything the training loop needs to go on exactly where it
stopped (weights, optimizer state, BatchNorm buffers, every member's data-order generator and the
dropout generator, histories and early-stopping state), written at the end of an epoch at most
every `every` seconds, atomically (temporary file + rename), as safetensors + a JSON header (no
pickle). A rerun after Ctrl-C, kill -9, a full disk or a lost Dask worker resumes the group from
it; the driver deletes it once the group's runs are committed.

The state itself (`snapshot`, `resume`) is here too: what a checkpoint holds is its format.

One file per group: OUT/checkpoints/<key>.safetensors, the key being a hash of the members' run
ids in order (the same group planned again finds it, on whatever device it resumes).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from .model import StackedMLP
from .optim import make_optimizer
from .store import write_bytes_atomic


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

    @classmethod
    def for_group(cls, folder: str | Path, run_ids: list[str], every: float) -> Checkpointer:
        return cls(path_for(folder, run_ids), every)

    def due(self) -> bool:
        return not self.failed and time.perf_counter() - self.last >= self.every

    def save(self, tensors: dict[str, torch.Tensor], meta: dict, strict: bool = False) -> str | None:
        """Write atomically; None, or the reason it could not be written (training goes on).
        strict: raise instead (a group paused at a rung cannot go on without it)."""
        self.last = time.perf_counter()
        try:
            data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                        metadata={"mlplab": json.dumps(meta)})
            write_bytes_atomic(self.path, data)
        except (OSError, SafetensorError) as e:
            if strict:
                raise
            self.failed = True
            return str(e).splitlines()[0]
        return None

    def load(self, run_ids: list[str]) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The checkpoint of exactly these members, or None (absent, unreadable or another
        group's: then the group starts from its first epoch)."""
        if not self.path.is_file():
            return None
        try:
            tensors = load_file(str(self.path))
            meta = read_meta(self.path)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError):
            return None
        return (tensors, meta) if meta.get("run_ids") == run_ids else None


def read_meta(path: Path) -> dict:
    """The JSON header `save` wrote (epoch, run ids, members' histories)."""
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["mlplab"])


def remove(folder: str | Path, run_ids: list[str]) -> None:
    """Delete a committed group's checkpoint (and the folder once empty)."""
    path_for(folder, run_ids).unlink(missing_ok=True)
    try:
        Path(folder).rmdir()
    except OSError:
        pass  # other groups' checkpoints are still there, or it never existed


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
    meta = {"run_ids": ids, "epoch": epoch, "active": active, "members": [
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
