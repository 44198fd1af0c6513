"""The worker's side of a Dask run (imported on the workers, with distributed there): the task that
trains a group, its progress callback, and how the driver stops it so that it saves first.

Stopping: the driver calls `request_stop(token)` on every worker (`Client.run`, which runs on the
worker's event loop even while a group trains in its thread); the group's progress callback
sees the token at its next event (batch events come at most every half second) and raises
KeyboardInterrupt in the training thread, so `train_group` writes its last finished epoch and
the task returns `Stopped` with what it saved. Tokens are per driver run: a long-lived remote
worker never stops another run's groups.
"""

from __future__ import annotations

import signal
import threading

from distributed.diagnostics.plugin import WorkerPlugin

from .interrupt import Interrupted, Stopped

TOPIC = "mlplab-progress"
_stopping: set[str] = set()  # driver runs that asked their groups to stop (this worker process)


def request_stop(token: str) -> None:
    """Run on a worker by the driver: groups of the run `token` stop at their next event."""
    _stopping.add(token)


class WorkerProgress:
    """The progress callback of a group on a worker: its epoch events go to the driver (tagged
    with the group); batch events stay on the worker (too many to send); every event checks
    whether the driver asked this run to stop."""

    def __init__(self, index: int, label: str, token: str = ""):
        self.index, self.label, self.token = index, label, token

    def __call__(self, e: dict) -> None:
        if self.token in _stopping:
            raise KeyboardInterrupt("the driver stopped this run")
        if e["event"] in ("epoch", "log"):
            from distributed import get_worker

            get_worker().log_event(TOPIC, {**e, "group": self.index, "label": self.label})


def train_on_worker(token: str, *args, **kwargs):
    """`work.train_and_evaluate` as a task of the driver run `token`: a group stopped by the
    driver returns `Stopped` (a task's KeyboardInterrupt is not for Dask to handle); one that
    starts after the stop does not train at all."""
    from .work import train_and_evaluate

    if token in _stopping:
        return Stopped([])
    try:
        return train_and_evaluate(*args, **kwargs)
    except Interrupted as e:
        return Stopped(e.saved)


class IgnoreInterrupt(WorkerPlugin):
    """A local cluster's worker processes share the user's terminal, so Ctrl-C reaches them too;
    they ignore it (each would print a traceback and die before saving) and stop when the driver
    asks them to."""

    name = "mlplab-ignore-interrupt"

    def setup(self, worker) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
