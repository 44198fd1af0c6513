"""The live state of one fused group between epochs (`Fused`): its model and optimizer, which
members still compute, every member's data-order generator and result so far. It starts
(seeding, initial weights, input statistics, optimizer, data orders), records an epoch
(history, divergence, best epoch, early stopping, chance), prunes members at a rung, compacts
itself to the members still running, and is saved and restored as one dict of named tensors
plus a JSON header: what an epoch checkpoint holds (checkpoint.py writes and reads the file).

Tensor names (every checkpoint since format 1 has them): model.<stored name> ([K, ...] of the
members still computing), opt.t and opt.<slot>.<i> (the optimizer's state), rng.cpu and rng.cuda
(the dropout generators), order.<j> (member j's data order), member.<j>.<stored name> (a member
that stopped: its final or best weights). Header: format, mlplab version, run ids, configs
(format 2), epoch, active (the member index at each model position), each member's history and
early-stopping state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .config import RunConfig
from .group import Group
from .model import StackedMLP
from .optim import Stacked, make_optimizer
from .store import HISTORY_FIELDS

FORMAT = 2  # 1: no configs in the header (still read: the group's own configs are checked)
DATA_ORDER_SALT = 0x5EED  # data order and initial weights come from different streams of the seed
_KEPT = ("history", "status", "best_epoch", "best_val_loss", "bad_epochs", "train_seconds")


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

    def end_epoch(self, model: StackedMLP, i: int) -> None:
        """Divergence, best epoch, early stopping and the end, after the epoch just recorded
        (this member at model position i)."""
        cfg, row = self.cfg, self.history[-1]
        if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
            self.status = "diverged"  # frozen here: its weights are kept as they are (not finite)
            self.state = self.state or model.member_state(i)
            return
        keep_best = cfg.patience is not None and cfg.restore_best
        if row["val_loss"] < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.bad_epochs = row["val_loss"], row["epoch"], 0
            if keep_best:
                self.state = model.member_state(i)
        else:
            self.bad_epochs += 1
        stop = cfg.patience is not None and self.bad_epochs >= cfg.patience
        if stop or row["epoch"] >= cfg.epochs:
            self.status = "chance" if at_chance(row, cfg.widths[-1]) else "finished"
            if not keep_best:
                self.state = model.member_state(i)


def at_chance(row: dict, n_classes: int) -> bool:
    """A member that ends at chance level learned nothing: accuracy <= 15% with the loss still
    near ln(classes) (2.30 for 10). Such runs are flagged, kept, and never ranked."""
    return row["val_acc"] <= 0.15 and row["val_loss"] >= 0.9 * math.log(n_classes)


def dropout_seed(seeds: list[int]) -> int:
    """The seed of a group's dropout masks (torch's global generator, restored afterwards by
    `train.guest`): CPython's hash of the tuple of member seeds, masked to 31 bits. Integers and
    tuples of integers hash the same in every process and on every 64-bit platform (only str and
    bytes hashes are salted), so a group draws the same masks wherever it trains; `reproduce`
    relies on it. Kept as it is (not a new formula) so that stored runs still reproduce."""
    return hash(tuple(seeds)) & 0x7FFFFFFF


@dataclass
class Fused:
    """One group between epochs. active[p]: the member (index into group) at model position p;
    epoch: the last finished epoch (0 before the first)."""

    group: Group
    model: StackedMLP
    opt: Stacked
    active: list[int]
    orders: list[torch.Generator]
    results: list[MemberResult]
    epoch: int = 0

    @classmethod
    def start(cls, group: Group, x_train: torch.Tensor, device: torch.device) -> Fused:
        """Epoch 0: initial weights from each member's seed, the training split's pixel
        statistics, a fresh optimizer, each member's data order from its seed."""
        torch.manual_seed(dropout_seed([c.seed for c in group]))
        model = StackedMLP(group, device)
        if model.standardize:  # the training split's pixel statistics, in x/255 units
            pixels = x_train.float() / 255
            model.set_input_stats(float(pixels.mean()), float(pixels.std()))
        opt = make_optimizer(list(model.parameters()), group)
        orders = [torch.Generator().manual_seed(c.seed ^ DATA_ORDER_SALT) for c in group]
        return cls(group, model, opt, list(range(len(group))), orders,
                   [MemberResult(c) for c in group])

    @classmethod
    def restore(cls, group: Group, tensors: dict[str, torch.Tensor], meta: dict,
                device: torch.device) -> Fused:
        """The group as `state` saved it (a checkpoint that `misfit` found fitting)."""
        torch.manual_seed(dropout_seed([c.seed for c in group]))  # a CUDA state missing: as at start
        active = list(meta["active"])
        computing = group.subset(active)
        model = StackedMLP(computing, device)  # parameters in their usual order: the optimizer's
        opt = make_optimizer(list(model.parameters()), computing)
        with torch.no_grad():
            for n, t in model.state().items():
                t.copy_(tensors[f"model.{n}"])
        opt.load_state_dict({n: tensors[f"opt.{n}"] for n in opt.state_dict()})
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        orders, results = [], []
        for j, (c, m) in enumerate(zip(group, meta["members"], strict=True)):
            orders.append(torch.Generator())
            orders[-1].set_state(tensors[f"order.{j}"])
            prefix = f"member.{j}."
            results.append(MemberResult(c, **{k: m[k] for k in _KEPT}, state={
                k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}))
        return cls(group, model, opt, active, orders, results, meta["epoch"])

    # --- an epoch ----------------------------------------------------------------------------
    @property
    def computing(self) -> Group:
        """The members in the computation, in model order."""
        return self.group.subset(self.active)

    def running(self) -> list[int]:
        """Model positions of the members still training."""
        return [pos for pos, j in enumerate(self.active) if self.results[j].status == "running"]

    def orders_for(self, n: int, device: torch.device) -> torch.Tensor:
        """The next epoch's order of the n training images for each member computing: [K, n]."""
        return torch.stack([torch.randperm(n, generator=self.orders[j]) for j in self.active]).to(device)

    def record(self, epoch: int, rows: list[list[float]], seconds: float, elapsed: float) -> None:
        """Epoch `epoch` ended: rows[p] = (train loss, train acc, val loss, val acc) of the member
        at model position p; each member still running appends it to its history and decides
        whether it goes on. elapsed: the group's training time so far."""
        lrs = self.opt.lrs()
        for pos, (j, (tl, ta, vl, va)) in enumerate(zip(self.active, rows, strict=True)):
            res = self.results[j]
            if res.status != "running":
                continue
            res.history.append({"epoch": epoch, "train_loss": tl, "train_acc": ta, "val_loss": vl,
                                "val_acc": va, "lr": lrs[pos], "seconds": seconds})
            res.train_seconds = elapsed
            res.end_epoch(self.model, pos)
        self.epoch = epoch

    def prune(self, prune: dict[str, int]) -> bool:
        """Members due to stop at a rung at or before the last finished epoch stop now, keeping
        their weights as they are (the rung's, when that epoch is the rung). Whether any did."""
        any_pruned = False
        for pos, j in enumerate(self.active):
            r = self.results[j]
            if r.status == "running" and prune.get(r.cfg.run_id, self.epoch + 1) <= self.epoch:
                r.status, r.state, any_pruned = "pruned", self.model.member_state(pos), True
        return any_pruned

    def compact(self) -> None:
        """Go on with the members still running only: their weights, optimizer state and data
        order move along unchanged (stopped members would keep costing compute)."""
        keep = self.running()
        computing = self.computing.subset(keep)
        self.model = self.model.select(keep, computing)
        self.opt = self.opt.select(keep, list(self.model.parameters()), computing)
        self.active = [self.active[p] for p in keep]

    # --- saved and restored ------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON-able header) of the whole group at the end of its last epoch."""
        from . import __version__

        tensors = {f"model.{n}": t for n, t in self.model.state().items()}
        tensors.update({f"opt.{n}": t for n, t in self.opt.state_dict().items()})
        tensors["rng.cpu"] = torch.get_rng_state()
        if self.model.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.model.device)
        for j, (g, r) in enumerate(zip(self.orders, self.results, strict=True)):
            tensors[f"order.{j}"] = g.get_state()
            tensors.update({f"member.{j}.{n}": t for n, t in r.state.items()})
        meta = {"format": FORMAT, "mlplab": __version__, "run_ids": self.group.run_ids,
                "epoch": self.epoch, "configs": [c.model_dump(mode="json") for c in self.group],
                "active": self.active,
                "members": [{k: getattr(r, k) for k in _KEPT} for r in self.results]}
        return tensors, meta


def misfit(shapes: dict[str, tuple[tuple[int, ...], str]], meta: dict, group: Group) -> str | None:
    """Why a checkpoint of this group's run ids cannot resume it (None: it fits): a format this
    version does not read, configurations that are not its members', an inconsistent header, a
    missing or unknown tensor, another shape. shapes: each tensor's (shape, safetensors dtype),
    from the file's header alone. The mlplab version that wrote it does not matter: the numbers
    of a step are kept bit-identical across versions (bench/same_numbers.py)."""
    fmt = meta.get("format", 1)
    if fmt not in (1, FORMAT):
        return (f"checkpoint format {fmt!r}, written by mlplab {meta.get('mlplab', '?')}; this "
                f"version reads formats 1 and {FORMAT}")
    if fmt == FORMAT and [RunConfig.model_validate(c).run_id for c in meta["configs"]] != meta["run_ids"]:
        return "its configurations are not its members'"
    why = _misfit_header(meta, len(group), group.epochs)
    if why:
        return why
    active, k = meta["active"], len(group)
    return _misfit_tensors(shapes, expected_shapes(group, len(active)), k)


STATUSES = ("running", "finished", "diverged", "chance", "pruned")


def _whole(x, low: int, high: int) -> bool:
    return type(x) is int and low <= x <= high  # not bool, not a float with a whole value


def _real(x) -> bool:
    return type(x) is float  # what training writes: not bool, int or a numeric string


def _misfit_header(meta: dict, k: int, epochs: int) -> str | None:
    """Why a header cannot describe a group of k members training for `epochs` (None: it can).
    Every value is checked for its exact type and range before use: a file's header is
    untrusted, and a value that passes here must not fail later (a string where a float
    belongs, an integer too large for the store)."""
    active, members, epoch = meta["active"], meta["members"], meta["epoch"]
    if (not isinstance(active, list) or not active or len(set(active)) != len(active)
            or not all(_whole(j, 0, k - 1) for j in active)
            or not isinstance(members, list) or len(members) != k or not _whole(epoch, 1, epochs)):
        return "its header is inconsistent"
    for j, m in enumerate(members):
        history = m["history"] if isinstance(m, dict) else None
        if (not isinstance(history, list) or len(history) > epoch
                or not all(isinstance(h, dict) and _whole(h.get("epoch"), 1, epoch)
                           and all(_real(h.get(f)) for f in HISTORY_FIELDS if f != "epoch")
                           for h in history)):
            return "a member's history is malformed"
        if (m["status"] not in STATUSES or (m["status"] == "running" and j not in active)
                or not all(_whole(m[f], 0, epoch) for f in ("best_epoch", "bad_epochs"))
                or not _real(m["best_val_loss"])
                or not (_real(m["train_seconds"]) and 0 <= m["train_seconds"] < math.inf)):
            return "a member's state is malformed"
    return None


def _misfit_tensors(shapes: dict, expected: dict[str, tuple[int, ...]], k: int) -> str | None:
    member = {n[len("model."):]: s[1:] for n, s in expected.items() if n.startswith("model.")}
    for name, (shape, _) in shapes.items():
        if name.startswith("member."):
            _, j, n = name.split(".", 2)
            if int(j) not in range(k) or member.get(n) != shape:
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


def expected_shapes(group: Group, k: int) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of this group holds with k members computing, and its shape.
    Members share all shapes, so one member's model and optimizer (cheap) give them."""
    one = group.subset([0])
    ref = StackedMLP(one)
    shapes = {f"model.{n}": (k, *t.shape[1:]) for n, t in ref.state().items()}
    opt = make_optimizer(list(ref.parameters()), one)
    shapes.update({f"opt.{n}": s for n, s in opt.state_shapes(k).items()})
    shapes["rng.cpu"] = tuple(torch.get_rng_state().shape)
    generator = tuple(torch.Generator().get_state().shape)
    shapes.update({f"order.{j}": generator for j in range(len(group))})
    return shapes
