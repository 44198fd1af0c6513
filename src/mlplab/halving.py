"""Synchronous successive halving over fused groups (the driver's side; the decisions themselves
are `pruning.decide`).

Every group trains to the next rung and pauses there (its epoch checkpoint holds it); once all
groups have reached the rung, the configurations still in the race are ranked by the mean of the
metric over their seeds, the best ceil(n / eta) go on (and with rule "noise" those within seed
noise of the last of them, and at the first rung the best with each value of each setting:
pruning.py), and the members of the others leave their groups at that rung (status "pruned",
their weights at the rung). The survivors resume from the checkpoint, never from scratch. The
decisions depend only on the members' histories, so they are the same in-process, on a Dask
cluster (groups return in any order), and after kill -9 and a rerun (the committed runs'
histories come from the store, the paused ones from their checkpoints, and a group whose
checkpoint is past a rung just reports its history again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .config import RunConfig
from .pruning import Decision, decide, rungs
from .search import SearchSpec, config_key


@dataclass(frozen=True)
class Rung:
    """How far a group trains in one call: to the end of `epoch` (a rung, where it pauses in its
    checkpoint; None: to its last epoch), with `prune` (run id -> the rung epoch at which that
    member leaves: status "pruned", its weights as they are at that rung)."""

    epoch: int | None = None
    prune: dict[str, int] = field(default_factory=dict)


@dataclass
class Paused:
    """A group stopped at a rung: (run id, history, status) of each member."""

    members: list[tuple[str, list[dict], str]]


# execute(groups, rung) -> (group, list of Trained | Paused) as each group returns
Execute = Callable[[list, Rung], Iterable[tuple[object, object]]]


class Halving:
    """Train `groups` rung by rung: iterating yields (group, list of Trained) as groups finish
    (the caller commits them); `log()` then says what each rung kept and pruned.

    cells: every cell of the suite (decisions rank them all, trained now or earlier); known: run
    id -> (history, status) of cells committed before."""

    def __init__(self, groups: list, cells: list[RunConfig], spec: SearchSpec,
                 known: dict[str, tuple[list[dict], str]], execute: Execute,
                 emit: Callable[[dict], None]):
        self.groups, self.cells, self.spec, self.execute, self.emit = groups, cells, spec, execute, emit
        self.keys = {c.run_id: config_key(c.model_dump(mode="json")) for c in cells}
        self.names = {self.keys[c.run_id]: c.name for c in cells}
        self.state = {rid: v for rid, v in known.items() if rid in self.keys}
        self.prune: dict[str, int] = {}
        self.rungs: list[dict] = []
        self.ladder = rungs(max(c.epochs for c in cells), spec.min_epochs, spec.eta)

    def __iter__(self) -> Iterator[tuple[object, list]]:
        warning = no_rung_warning(self.cells, self.spec)
        if warning:
            self.emit({"event": "log", "message": warning})
        pending = list(self.groups)
        for epoch in self.ladder:
            pending = yield from self._leg(pending, epoch)
            self._decide(epoch)
        yield from self._leg(pending, None)

    def _leg(self, groups: list, epoch: int | None):
        """Train `groups` to `epoch`; yields the finished ones, returns the paused ones."""
        paused = []
        for group, outcome in self.execute(groups, Rung(epoch, dict(self.prune))) if groups else ():
            if isinstance(outcome, Paused):
                self.state.update({rid: (h, s) for rid, h, s in outcome.members})
                paused.append(group)
            else:
                self.state.update({t.cfg.run_id: (t.history, t.metrics["status"]) for t in outcome})
                yield group, outcome
        return paused

    def _decide(self, epoch: int) -> None:
        """Rank every configuration at the rung; the members of those pruned leave there."""
        seeds: dict[str, list] = {}
        for c in self.cells:
            if c.run_id in self.state:
                seeds.setdefault(self.keys[c.run_id], []).append(self.state[c.run_id])
        spec, epochs = self.spec, {self.keys[c.run_id]: c.epochs for c in self.cells}
        decision = decide(epoch, seeds, epochs, spec.eta, spec.metric, spec.rule, spec.alpha,
                          first=epoch == self.ladder[0])
        for rid, k in self.keys.items():
            if k in decision.pruned:
                self.prune.setdefault(rid, epoch)
        entry = rung_entry(decision, self.names)
        self.rungs.append(entry)
        self.emit({"event": "rung", "metric": spec.metric, **entry})
        self.emit({"event": "log", "message": entry["why"]})

    def log(self) -> dict:
        """The search as search.json has it: the settings and every rung so far."""
        s = self.spec
        return {"method": s.method, "eta": s.eta, "min_epochs": s.min_epochs, "metric": s.metric,
                "rule": s.rule, "alpha": s.alpha, "rungs": self.rungs}


def budget(rows: list[dict], cells: list[RunConfig]) -> dict:
    """Model-epochs spent on these runs, and what training every cell to its end would take."""
    spent = sum(int(r["epochs_run"]) for r in rows)
    return {"model_epochs": spent, "full_grid_model_epochs": sum(c.epochs for c in cells)}


def rung_entry(d: Decision, names: dict[str, str]) -> dict:
    """A rung as search.json and the log have it: names best first, why, the noise estimate."""
    return {"epoch": d.epoch, "contenders": len(d.kept) + len(d.pruned),
            "kept": [names[k] for k in d.kept], "pruned": [names[k] for k in d.pruned],
            "best": d.best, "within_noise": [names[k] for k in d.within_noise],
            "choices": {names[k]: label for k, label in d.choices.items()},
            "seed_sd": d.sd, "margin": d.margin, "why": d.why()}


def no_rung_warning(cells: list[RunConfig], spec: SearchSpec) -> str | None:
    """One line when min_epochs leaves no rung below every run's epochs: nothing is pruned."""
    longest = max(c.epochs for c in cells)
    if rungs(longest, spec.min_epochs, spec.eta):
        return None
    return (f"search: min_epochs = {spec.min_epochs} is not below any run's epochs (the longest "
            f"has {longest}): no rung, nothing is pruned; set min_epochs below {longest}")
