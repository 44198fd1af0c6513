"""One owner per results folder: `mlplab run` holds an exclusive lock on OUT/.mlplab.lock for its
whole life. The lock is an `fcntl.flock`, which the kernel drops when the process ends however it
ends (kill -9 included), so a stale lock never blocks a rerun. The file says who holds it (pid,
host, start time) so that a second run can name the holder in its one-line error.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".mlplab.lock"


def holder(out: Path) -> str:
    """Who holds OUT's lock, in words (from the lock file; '?' where it cannot be read)."""
    try:
        info = json.loads((Path(out) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')}, "
            f"started {info.get('started', '?')}")


@contextlib.contextmanager
def own(out: str | Path) -> Iterator[Path]:
    """Hold OUT exclusively until the block ends; a UserError at once if another process holds
    it. Creates OUT (the caller validated everything before)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"--out {out}: cannot write there ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"--out {out} is in use by another mlplab run ({holder(out)}); wait for "
                            "it to finish or choose another --out") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": dt.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield out
    finally:
        os.close(fd)  # closing the descriptor releases the lock
