"""Processes that tests start and kill."""

from __future__ import annotations

import os
import signal
import subprocess
import time


def kill_at(cmd: list[str], env: dict, marker: str, deadline_s: float = 300) -> None:
    """Start `cmd`, read its stderr until a line holding `marker` (or the deadline: then the
    test's own checks fail), and SIGKILL it at once: no sleep decides where it dies."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + deadline_s
    for line in proc.stderr:
        if marker in line or time.time() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
