"""The only training loop: one fused group of K same-shape members per call (K >= 1).

Each member keeps its own seed (initial weights and data order come from it, so a member trains
the same alone or in a group), its own early stopping and its own divergence flag. On CUDA the
dataset sits on the device as uint8, batches are gathered there, the full-batch step is captured
once in a CUDA graph and replayed, and nothing waits on the host until the epoch ends.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .bf16 import fallback_message
from .checkpoint import Checkpointer, resume, snapshot
from .config import RunConfig
from .data import Splits
from .errors import UserError
from .evaluate import logits, loss_acc
from .group import group_settings
from .interrupt import Interrupted, LastEpoch
from .model import StackedMLP
from .optim import lr_scale, make_optimizer
from .step import Step, graph_step, loss_and_grad  # noqa: F401  (loss_and_grad: re-exported)

TICK = 0.5  # seconds between progress events inside an epoch
DATA_ORDER_SALT = 0x5EED  # data order and initial weights come from different streams of the seed


@dataclass
class MemberResult:
    """What one member produced: per-epoch history, final weights, status."""

    cfg: RunConfig
    history: list[dict] = field(default_factory=list)
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    # running (or paused at a rung) | finished | diverged (non-finite loss) | chance (learned
    # nothing) | pruned (stopped at a rung of successive halving)
    status: str = "running"
    best_epoch: int = 0
    best_val_loss: float = math.inf
    bad_epochs: int = 0  # epochs since the best validation loss (early stopping)
    train_seconds: float = 0.0

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu. 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda': no CUDA device is available here; use auto or cpu")
    if name not in ("cpu", "cuda"):  # the words of inputs.check_device (the CLI's --device too)
        raise UserError(f"device {name!r} is not one of: auto, cpu, cuda")
    return torch.device(name)


Progress = Callable[[dict], None]


def train_group(cfgs: list[RunConfig], splits: Splits, device: torch.device | str = "cpu",
                progress: Progress | None = None, graphs: bool | None = None,
                tf32: bool = True, checkpoint: Checkpointer | None = None,
                stop_at: int | None = None, prune: dict[str, int] | None = None) -> list[MemberResult]:
    """Train K members with identical shapes as one computation; one MemberResult each.

    splits: uint8 images / int64 labels (moved to `device` here). graphs: capture the step in a
    CUDA graph (default: on CUDA). Members may differ in seed, lr, weight decay, dropout rate,
    initializer, epochs and patience. Once half of the members still in the computation have
    stopped (epochs done, early stopping, divergence), the group is rebuilt without them.
    checkpoint: where to save the group at epoch ends and resume it from (bit-identical to an
    uninterrupted run on the same device). On KeyboardInterrupt (Ctrl-C, a kernel interrupt, or
    `progress` raising it) the last finished epoch is written there, whatever its period says,
    and `Interrupted` is raised with what was saved.

    Successive halving: stop_at pauses the group after that epoch (a rung): its checkpoint is
    written and the members still training come back with status "running"; the next call
    resumes from it. prune: run id -> the rung epoch at which that member stops (status "pruned",
    its weights as they are at the rung); it leaves the group there, the others go on unchanged."""
    device = torch.device(device)
    group_settings(cfgs)  # a ValueError unless the members share shapes and code path
    if stop_at is not None and checkpoint is None:
        raise ValueError("train_group: pausing at a rung (stop_at) needs a checkpoint to resume from")
    kept = LastEpoch(checkpoint, [c.name for c in cfgs], max(c.epochs for c in cfgs))
    try:
        with guest(device, tf32):
            return _train_group(cfgs, splits, device, progress, graphs, checkpoint, stop_at,
                                prune or {}, kept)
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


def _train_group(cfgs: list[RunConfig], splits: Splits, device: torch.device,
                 progress: Progress | None, graphs: bool | None,
                 checkpoint: Checkpointer | None, stop_at: int | None,
                 prune: dict[str, int], kept: LastEpoch) -> list[MemberResult]:
    graphs = device.type == "cuda" if graphs is None else graphs
    data = splits.to(device)
    n, bsz = len(data.x_train), group_settings(cfgs).batch_size
    full, rest = divmod(n, bsz)
    torch.manual_seed(dropout_seed([c.seed for c in cfgs]))
    model = StackedMLP(cfgs, device)
    if progress and model.precision != group_settings(cfgs).precision:
        progress({"event": "log", "message": fallback_message(device)})
    if model.standardize:  # the training split's pixel statistics, in x/255 units
        pixels = data.x_train.float() / 255
        model.set_input_stats(float(pixels.mean()), float(pixels.std()))
    opt = make_optimizer(list(model.parameters()), cfgs)
    active = list(range(len(cfgs)))  # the member (index into cfgs) at each model position
    orders = [torch.Generator().manual_seed(c.seed ^ DATA_ORDER_SALT) for c in cfgs]
    results = [MemberResult(c) for c in cfgs]
    max_epochs = max(c.epochs for c in cfgs)
    started, first = time.perf_counter(), 1
    ids = [c.run_id for c in cfgs]
    saved = checkpoint.load(ids) if checkpoint else None
    if saved:  # go on exactly where the last checkpoint left this group
        model, opt, active, first = resume(saved, cfgs, device, orders, results)
        kept.finished(first - 1, None, written=True)
        started -= max(r.train_seconds for r in results)  # Train s counts the earlier part too
        if _prune(model, active, results, prune, first - 1):
            if not any(r.status == "running" for r in results):
                return results  # every member left at a rung: nothing to train
            model, opt, active = _compact_running(model, opt, active, cfgs, results)
        if progress and (stop_at is None or first <= stop_at):
            progress({"event": "log", "message": f"resumed from the checkpoint after epoch {first - 1}",
                      "resumed": first - 1})
    step = graph_full = None
    last = max_epochs if stop_at is None else min(stop_at, max_epochs)
    for epoch in range(first, last + 1):
        if step is None:  # (re)built at the start and after each compaction
            step = Step(model, opt, data.x_train, data.y_train, [cfgs[j] for j in active])
            graph_full = graph_step(step, bsz, progress) if graphs and full else None
        t0 = time.perf_counter()
        opt.set_lr_scales([lr_scale(cfgs[j], epoch - 1) for j in active])
        perm = torch.stack([torch.randperm(n, generator=orders[j]) for j in active]).to(device)
        model.train()
        step.loss_sum.zero_()
        step.correct.zero_()
        run = graph_full or step
        steps, tick = full + (1 if rest else 0), time.perf_counter() + TICK
        for s in range(full):
            run(perm[:, s * bsz:(s + 1) * bsz])
            if progress and time.perf_counter() >= tick:  # progress inside a long epoch
                progress({"event": "batch", "epoch": epoch, "epochs": max_epochs, "step": s + 1,
                          "steps": steps})
                tick = time.perf_counter() + TICK
        if rest:  # Keras keeps the last, smaller batch: so do we (eagerly, its own shape)
            step(perm[:, full * bsz:])
        val_loss, val_acc = loss_acc(logits(model, data.x_val), data.y_val)
        rows = torch.stack([step.loss_sum / n, step.correct / n, val_loss, val_acc]).T.tolist()
        seconds = time.perf_counter() - t0
        for pos, (j, row) in enumerate(zip(active, rows, strict=True)):
            res = results[j]
            if res.status != "running":
                continue
            tl, ta, vl, va = row
            res.history.append({"epoch": epoch, "train_loss": tl, "train_acc": ta, "val_loss": vl,
                                "val_acc": va, "lr": float(opt.hp["lr"][pos]), "seconds": seconds})
            res.train_seconds = time.perf_counter() - started
            _member_epoch(res, pos, model)
        pruned = _prune(model, active, results, prune, epoch)
        running = [pos for pos, j in enumerate(active) if results[j].status == "running"]
        ended = {"event": "epoch", "epoch": epoch, "epochs": max_epochs,
                 "val_acc": [r.history[-1]["val_acc"] for r in results if r.history],
                 "running": len(running), "computing": len(active)}
        if running and (pruned or len(running) <= len(active) // 2):
            # Stopped members would keep costing compute until the last one stops: rebuild the
            # group with the running ones (their state, optimizer state and data order move
            # along unchanged; at most log2(K) rebuilds, plus one per rung that prunes).
            model, opt, active = _compact_running(model, opt, active, cfgs, results)
            step = None
        if checkpoint and running:
            _checkpoint(checkpoint, snapshot(model, opt, active, epoch, ids, orders, results),
                        epoch, epoch == stop_at, kept, progress)
        if progress:  # after the epoch is saved or held: an interrupt from here keeps it
            progress(ended)
        if not running:
            break
    return results


def _checkpoint(checkpoint: Checkpointer, state, epoch: int, pause: bool, kept: LastEpoch,
                progress: Progress | None) -> None:
    """Write the epoch's checkpoint when due (always at a rung: the next rung resumes from it,
    so that one must not fail); otherwise hold the state in memory for an interrupt."""
    write = pause or checkpoint.due()
    failed = checkpoint.save(*state, strict=pause) if write else None
    if failed and progress:
        progress({"event": "log", "message": f"checkpoints off for this group: {failed}"})
    kept.finished(epoch, state, written=write and not failed)


def _prune(model, active, results, prune: dict[str, int], epoch: int) -> bool:
    """Members due to stop at a rung at or before `epoch` stop now, keeping their weights as they
    are (the rung's, when `epoch` is the rung). Whether any did."""
    any_pruned = False
    for pos, j in enumerate(active):
        r = results[j]
        if r.status == "running" and prune.get(r.cfg.run_id, epoch + 1) <= epoch:
            r.status, r.state, any_pruned = "pruned", model.member_state(pos), True
    return any_pruned


def _compact_running(model, opt, active, cfgs, results):
    """(model, optimizer, active) holding only the members still running."""
    running = [pos for pos, j in enumerate(active) if results[j].status == "running"]
    model, opt = _compact(model, opt, running, [cfgs[active[p]] for p in running])
    return model, opt, [active[p] for p in running]


def dropout_seed(seeds: list[int]) -> int:
    """The seed of a group's dropout masks (torch's global generator, restored afterwards by
    `guest`): CPython's hash of the tuple of member seeds, masked to 31 bits. Integers and tuples
    of integers hash the same in every process and on every 64-bit platform (only str and bytes
    hashes are salted), so a group draws the same masks wherever it trains; `reproduce` relies on
    it. Kept as it is (not a new formula) so that stored runs still reproduce."""
    return hash(tuple(seeds)) & 0x7FFFFFFF


def _compact(model: StackedMLP, opt, keep: list[int], cfgs: list[RunConfig]):
    """A new model and optimizer holding only the members at positions `keep` of the old ones."""
    new = model.select(keep, cfgs)
    new_opt = make_optimizer(list(new.parameters()), cfgs)
    idx = torch.tensor(keep, device=opt.t.device)
    with torch.no_grad():
        new_opt.t.copy_(opt.t)
        for slot, tensors in opt.state.items():
            for mine, old in zip(new_opt.state[slot], tensors, strict=True):
                mine.copy_(old.index_select(0, idx))
    return new, new_opt


def _member_epoch(res: MemberResult, i: int, model: StackedMLP) -> None:
    """Divergence, best epoch, early stopping and the end of member res (at model position i)."""
    cfg, row = res.cfg, res.history[-1]
    if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
        res.status = "diverged"  # frozen here: its weights are kept as they are (not finite)
        res.state = res.state or model.member_state(i)
        return
    keep_best = cfg.patience is not None and cfg.restore_best
    if row["val_loss"] < res.best_val_loss:
        res.best_val_loss, res.best_epoch, res.bad_epochs = row["val_loss"], row["epoch"], 0
        if keep_best:
            res.state = model.member_state(i)
    else:
        res.bad_epochs += 1
    stop = cfg.patience is not None and res.bad_epochs >= cfg.patience
    if stop or row["epoch"] >= cfg.epochs:
        res.status = "chance" if at_chance(row, cfg.widths[-1]) else "finished"
        if not keep_best:
            res.state = model.member_state(i)


def at_chance(row: dict, n_classes: int) -> bool:
    """A member that ends at chance level learned nothing: accuracy <= 15% with the loss still
    near ln(classes) (2.30 for 10). Such runs are flagged, kept, and never ranked."""
    return row["val_acc"] <= 0.15 and row["val_loss"] >= 0.9 * math.log(n_classes)
