"""Interrupts that save: on Ctrl-C, SIGTERM (the CLI) or Kernel → Interrupt (Jupyter), each group in
training writes a checkpoint of its last finished epoch, whatever `checkpoint_every` says, and
the user is told in at most two lines what was saved and that the same command (or call) resumes.

`LastEpoch` holds a group's state at the end of its last finished epoch (in memory when the periodic
checkpoint was not due) so that an interrupt in the middle of the next epoch can still write it;
the copy costs one host copy of the parameters and optimizer slots per epoch (host memory, on
top of `memory.py`'s estimate). `Interrupted` is the KeyboardInterrupt that carries what was
saved; IPython shows only its lines (`_render_traceback_`), not a traceback through torch.

Torch-free: `mlplab.Interrupted` is importable without torch.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

COMMAND = "run the same command again to resume"
CALL = "the same mlplab.run(...) call resumes"
_signals: list[int] = []  # SIGTERMs turned into KeyboardInterrupt (the CLI's exit code says which)


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C, SIGTERM or a kernel interrupt, after saving what it could.

    saved: one record per group that was training (`LastEpoch.save`), or None where that is not
    known (an interrupt outside training). A KeyboardInterrupt, so code that catches that keeps
    working, and a notebook cell stops."""

    def __init__(self, saved: list[dict] | None = None, resume: str = COMMAND, kept: bool = True):
        self.saved, self.resume, self.kept = saved, resume, kept
        super().__init__(self.text())

    def lines(self) -> list[str]:
        """What was saved, then how to resume (one or two lines)."""
        if not self.kept:
            return ["interrupted: nothing is kept (out=None trains in a temporary folder, deleted "
                    "now); pass out=FOLDER to keep runs and resume after an interrupt"]
        end = f"every finished run is saved; {self.resume}"
        if self.saved is None:
            return [f"interrupted: {end}"]
        return [f"interrupted: {describe(self.saved)}", end]

    def text(self) -> str:
        return "; ".join(self.lines())

    def __str__(self) -> str:
        return self.text()

    def _render_traceback_(self) -> list[str]:  # IPython: these lines instead of a traceback
        return self.lines()

    __module__ = "mlplab"  # shown as mlplab.Interrupted (exported there)

    def __reduce__(self):  # pickle (a worker to the driver) calls __init__ with these
        return (type(self), (self.saved, self.resume, self.kept))


def for_call(e: KeyboardInterrupt, emit, temporary: bool) -> Interrupted:
    """The Interrupted that `mlplab.run` raises (its own lines, a short traceback); `emit` (the
    progress view) ends on the same text."""
    saved = e.saved if isinstance(e, Interrupted) else None
    short = Interrupted(saved, CALL, kept=not temporary)
    if emit:
        emit({"event": "interrupted", "message": short.text()})
    return short


def describe(saved: list[dict]) -> str:
    """One clause: which groups were saved at which epoch, and where."""
    if not saved:
        return "no group was training"
    done = [s for s in saved if s.get("path")]
    parts = []
    if done:
        where = sorted({str(Path(s["path"]).parent) for s in done})
        epochs = ", ".join(f"{_names(s)} at epoch {s['epoch']}/{s['epochs']}" for s in done[:3])
        more = f" and {len(done) - 3} more groups" if len(done) > 3 else ""
        parts.append(f"saved {epochs}{more} in {', '.join(where)}")
    for s in saved:
        if not s.get("path"):
            parts.append(f"{_names(s)}: {s.get('error') or 'no epoch finished yet, nothing to save'}")
    return "; ".join(parts[:4])


def _names(s: dict) -> str:
    names = list(dict.fromkeys(s.get("names", [])))
    return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")


@dataclass
class LastEpoch:
    """A group's state at the end of its last finished epoch: on disk (`written`), or held in
    memory until an interrupt asks for it."""

    checkpoint: object | None  # a checkpoint.Checkpointer, or None (checkpoints off)
    names: list[str]
    epochs: int  # the group's last epoch, for the message
    epoch: int = 0  # last finished epoch
    written: int = 0  # last epoch whose checkpoint is on disk
    held: tuple[dict, dict] | None = field(default=None, repr=False)

    def finished(self, epoch: int, state: tuple[dict, dict] | None, written: bool) -> None:
        """Epoch `epoch` ended; `state` = `Fused.state()` (live tensors: copied here
        unless that state was just written)."""
        self.epoch = epoch
        if written:
            self.written, self.held = epoch, None
        elif state is not None:
            tensors, meta = state
            # a host copy: GPU memory stays what the group needs to train (memory.py's estimate)
            self.held = ({k: v.detach().to("cpu", copy=True) for k, v in tensors.items()},
                         copy.deepcopy(meta))

    def save(self) -> dict:
        """Write the held state (if the last finished epoch is not on disk yet); the record of
        what is saved for `Interrupted`."""
        record = {"names": self.names, "epoch": self.epoch, "epochs": self.epochs, "path": None,
                  "error": None}
        if self.checkpoint is None:
            record["error"] = "checkpoints are off (checkpoint_every=None): nothing saved"
            return record
        if self.epoch and self.written < self.epoch and self.held is not None:
            failed = self.checkpoint.save(*self.held)
            if failed:
                record["error"] = f"its checkpoint could not be written ({failed})"
                return record
            self.written, self.held = self.epoch, None
        if self.written:
            record["epoch"], record["path"] = self.written, str(self.checkpoint.path)
        return record


@dataclass
class Stopped:
    """What a Dask task returns when the driver asked it to stop: the `LastEpoch.save` records."""

    saved: list[dict]


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block (so a terminated run saves as Ctrl-C
    does); the previous handler comes back afterwards. Only in the main thread (where Python
    delivers signals); elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _signals.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    before = signal.signal(signal.SIGTERM, handler)
    _signals.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def terminated() -> bool:
    """Whether the last interrupt inside `terminate_as_interrupt` was a SIGTERM."""
    return bool(_signals)
