"""Processes that tests start, probe and kill."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
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


HEAVY = ("torch", "matplotlib", "matplotlib.pyplot", "pandas")


def heavy_after(code: str) -> set[str]:
    """Run `code` in a fresh interpreter (it must exit 0: its own asserts count) and return the
    heavy modules (torch, matplotlib, pyplot, pandas) it left imported."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(ast.literal_eval(proc.stdout.splitlines()[-1]))
