"""The only training loop: one fused group of K same-shape members per call (K >= 1).

Each member keeps its own seed (initial weights and data order come from it, so a member trains
the same alone or in a group), its own early stopping and its own divergence flag. On CUDA the
dataset sits on the device as uint8, batches are gathered there, the full-batch step is captured
once in a CUDA graph and replayed, and nothing waits on the host until the epoch ends.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from functools import partial

import torch

from .bf16 import fallback_message
from .checkpoint import Checkpointer
from .config import RunConfig
from .data import Splits
from .errors import UserError
from .evaluate import logits, loss_acc
from .fused import Fused, MemberResult, misfit
from .group import Group
from .halving import Rung
from .interrupt import Interrupted, LastEpoch
from .optim import lr_scale
from .step import Step, graph_step, loss_and_grad  # noqa: F401  (loss_and_grad: re-exported)

TICK = 0.5  # seconds between progress events inside an epoch
Progress = Callable[[dict], None]


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu. 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda': no CUDA device is available here; use auto or cpu")
    if name not in ("cpu", "cuda"):  # the words of inputs.check_device (the CLI's --device too)
        raise UserError(f"device {name!r} is not one of: auto, cpu, cuda")
    return torch.device(name)


def train_group(cfgs: Group | list[RunConfig], splits: Splits, device: torch.device | str = "cpu",
                progress: Progress | None = None, graphs: bool | None = None,
                tf32: bool = True, checkpoint: Checkpointer | None = None,
                rung: Rung | None = None) -> list[MemberResult]:
    """Train K members with identical shapes as one computation; one MemberResult each.

    splits: uint8 images / int64 labels (moved to `device` here). graphs: capture the step in a
    CUDA graph (default: on CUDA). Members may differ in seed, lr, weight decay, dropout rate,
    initializer, epochs and patience. Once half of the members still in the computation have
    stopped (epochs done, early stopping, divergence), the group is rebuilt without them.
    checkpoint: where to save the group at epoch ends and resume it from (bit-identical to an
    uninterrupted run on the same device). On KeyboardInterrupt (Ctrl-C, a kernel interrupt, or
    `progress` raising it) the last finished epoch is written there, whatever its period says,
    and `Interrupted` is raised with what was saved.

    Successive halving (`halving.Rung`): rung.epoch pauses the group after that epoch: its
    checkpoint is written and the members still training come back with status "running"; the
    next call resumes from it. rung.prune: run id -> the rung epoch at which that member stops
    (status "pruned", its weights as they are at the rung); the others go on unchanged."""
    device, group, rung = torch.device(device), Group.of(cfgs), rung or Rung()
    if rung.epoch is not None and checkpoint is None:
        raise ValueError("train_group: pausing at a rung needs a checkpoint to resume from")
    kept = LastEpoch(checkpoint, [c.name for c in group], group.epochs)
    try:
        with guest(device, tf32):
            return _train(group, splits.to(device), device, progress, graphs, checkpoint, rung, kept)
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted([kept.save()]) from None  # one line for the user, not torch's frames


@contextlib.contextmanager
def guest(device: torch.device, tf32: bool | None = None):
    """Leave the caller's session as it was: torch's global RNG state (CPU, and the CUDA device
    in use) and the TF32 flags are restored on the way out, whatever happens inside."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with torch.random.fork_rng(devices=cuda):
        try:
            if cuda and tf32 is not None:
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _train(group: Group, data: Splits, device: torch.device, progress: Progress | None,
           graphs: bool | None, checkpoint: Checkpointer | None, rung: Rung,
           kept: LastEpoch) -> list[MemberResult]:
    """The loop: start or resume the group, then epoch after epoch: train, record, prune at a
    rung, compact, checkpoint, report; until no member runs or the rung is reached."""
    fused = _start(group, data, device, checkpoint, rung, kept, progress)
    started = time.perf_counter()  # Train s: from the first epoch on, as before the refactor
    if not fused.running():
        return fused.results  # every member left at a rung: nothing to train
    graphs = device.type == "cuda" if graphs is None else graphs
    bsz = group.settings.batch_size
    step = graph = None
    last = group.epochs if rung.epoch is None else min(rung.epoch, group.epochs)
    started -= max(r.train_seconds for r in fused.results)  # Train s counts the earlier part too
    for epoch in range(fused.epoch + 1, last + 1):
        if step is None:  # (re)built at the start and after each compaction
            step = Step(fused.model, fused.opt, data.x_train, data.y_train, fused.computing)
            graph = graph_step(step, bsz, progress) if graphs and len(data.x_train) >= bsz else None
        t0 = time.perf_counter()
        rows = _epoch(fused, step, graph, data, epoch, progress)
        fused.record(epoch, rows, time.perf_counter() - t0, time.perf_counter() - started)
        pruned = fused.prune(rung.prune)
        running = fused.running()
        ended = {"event": "epoch", "epoch": epoch, "epochs": group.epochs,
                 "val_acc": [r.history[-1]["val_acc"] for r in fused.results if r.history],
                 "running": len(running), "computing": len(fused.active)}
        if running and (pruned or len(running) <= len(fused.active) // 2):
            # Stopped members would keep costing compute until the last one stops: at most
            # log2(K) rebuilds, plus one per rung that prunes.
            fused.compact()
            step = None
        if checkpoint and running:
            _checkpoint(checkpoint, fused, epoch == rung.epoch, kept, progress)
        if progress:  # after the epoch is saved or held: an interrupt from here keeps it
            progress(ended)
        if not running:
            break
    return fused.results


def _start(group: Group, data: Splits, device: torch.device, checkpoint: Checkpointer | None,
           rung: Rung, kept: LastEpoch, progress: Progress | None) -> Fused:
    """The group at its first epoch, or exactly where its checkpoint left it (members due to
    leave at a rung already passed leave now)."""
    saved = checkpoint.load(group.run_ids, partial(misfit, group=group)) if checkpoint else None
    if saved is None:
        fused = Fused.start(group, data.x_train, device)
    else:
        fused = Fused.restore(group, *saved, device)
    if progress and fused.model.precision != group.settings.precision:
        progress({"event": "log", "message": fallback_message(device)})
    if saved is None:
        return fused
    kept.finished(fused.epoch, None, written=True)
    if fused.prune(rung.prune) and fused.running():
        fused.compact()
    if progress and fused.running() and (rung.epoch is None or fused.epoch < rung.epoch):
        progress({"event": "log", "message": f"resumed from the checkpoint after epoch {fused.epoch}",
                  "resumed": fused.epoch})
    return fused


def _epoch(fused: Fused, step: Step, graph, data: Splits, epoch: int,
           progress: Progress | None) -> list[list[float]]:
    """One pass over the training split in each member's own order (full batches through the
    CUDA graph when there is one; Keras keeps the last, smaller batch: so do we, eagerly), then
    the validation split. Per member: [train loss, train acc, val loss, val acc]."""
    n, bsz = len(data.x_train), fused.group.settings.batch_size
    full, rest = divmod(n, bsz)
    fused.opt.set_lr_scales([lr_scale(c, epoch - 1) for c in fused.computing])
    perm = fused.orders_for(n, data.x_train.device)
    fused.model.train()
    step.loss_sum.zero_()
    step.correct.zero_()
    run = graph or step
    steps, tick = full + (1 if rest else 0), time.perf_counter() + TICK
    for s in range(full):
        run(perm[:, s * bsz:(s + 1) * bsz])
        if progress and time.perf_counter() >= tick:  # progress inside a long epoch
            progress({"event": "batch", "epoch": epoch, "epochs": fused.group.epochs,
                      "step": s + 1, "steps": steps})
            tick = time.perf_counter() + TICK
    if rest:
        step(perm[:, full * bsz:])
    val_loss, val_acc = loss_acc(logits(fused.model, data.x_val), data.y_val)
    return torch.stack([step.loss_sum / n, step.correct / n, val_loss, val_acc]).T.tolist()


def _checkpoint(checkpoint: Checkpointer, fused: Fused, pause: bool, kept: LastEpoch,
                progress: Progress | None) -> None:
    """Write the epoch's checkpoint when due (always at a rung: the next rung resumes from it,
    so that one must not fail); otherwise hold the state in memory for an interrupt."""
    state = fused.state()
    write = pause or checkpoint.due()
    failed = checkpoint.save(*state, strict=pause) if write else None
    if failed and progress:
        progress({"event": "log", "message": f"checkpoints off for this group: {failed}"})
    kept.finished(fused.epoch, state, written=write and not failed)
