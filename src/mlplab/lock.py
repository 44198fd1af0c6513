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
import stat
from collections.abc import Iterator
from pathlib import Path

from . import layout
from .errors import UserError
from .safefs import link_error


def holder(out: Path) -> str:
    """Who holds OUT's lock, in words (from the lock file; '?' where it cannot be read)."""
    try:  # never through a link, and only a little of it
        fd = os.open(layout.lock(out), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            info = json.loads(os.read(fd, 4096) or b"{}")
        finally:
            os.close(fd)
        info = info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        info = {}
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')}, "
            f"started {info.get('started', '?')}")


@contextlib.contextmanager
def own(out: str | Path) -> Iterator[Path]:
    """Hold OUT exclusively until the block ends; a UserError at once if another process holds
    it. Creates OUT (the caller validated everything before)."""
    out = Path(out)
    fd = _open_lock(out)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"out {out} is in use by another mlplab run ({holder(out)}); wait for "
                            "it to finish or choose another results folder") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": dt.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield out
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open_lock(out: Path) -> int:
    """OUT/.mlplab.lock opened for writing, never through a link (O_NOFOLLOW) and only when it
    is a plain file with one name: the lock's JSON is written into it, and a planted link, FIFO
    or hard link must not carry that write anywhere else."""
    path = layout.lock(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     0o644)
    except OSError as e:
        if os.path.islink(path):
            raise link_error(path) from None
        raise UserError(f"out {out}: cannot write there ({e.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise UserError(f"{path}: not a plain file of its own (a FIFO, device or hard link was "
                        "put there); remove it and run again")
    return fd
