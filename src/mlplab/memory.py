"""Will the largest fused group fit? An estimate by arithmetic (nothing is allocated) of what one
group holds while it trains — parameters, gradients and optimizer state of its K members, and
the activations of one batch — checked against the memory free on the training device before
OUT is created. It is a floor (allocator slack, checkpoint copies and the CUDA context come on
top), so a refusal means the group cannot fit; passing does not promise that it will.

MLPLAB_MEMORY_GB sets the memory to check against (tests; a machine whose free memory is
misreported); unset, it is read from /proc/meminfo and the cgroup limit (CPU) or from the
driver (CUDA)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from .config import RunConfig

FLOAT = 4  # bytes: parameters, optimizer state and activations are fp32 (bf16 casts come on top)
SLOTS = {"sgd": 1, "momentum": 1, "nesterov": 1, "adam": 2, "adamw": 2, "rmsprop": 1}
EVAL_ROWS = 8192  # evaluate.logits broadcasts ~8192 rows over the K members at a time
GB = 1e9


def group_bytes(cfgs: list[RunConfig], rows: int) -> int:
    """Bytes one fused group of these members needs at least while it trains on batches of
    `rows` images: K x (parameters + gradients + optimizer slots), and the tensors a training
    step keeps for its backward (each layer's output, BatchNorm's input, dropout's mask)."""
    c, k = cfgs[0], len(cfgs)
    w = c.widths
    params = sum(a * b + b for a, b in zip(w, w[1:], strict=False))
    params += 4 * sum(w[1:-1]) if c.norm != "none" else 0  # scale, shift (+ BN's running stats)
    state = k * params * FLOAT * (2 + SLOTS.get(c.optimizer, 2))
    per_unit = 2 + (c.norm != "none") + 2 * any(m.dropout > 0 for m in cfgs)
    train = k * rows * (w[0] + per_unit * sum(w[1:-1]) + 2 * w[-1] + 2 * max(w)) * FLOAT
    evaluate = max(EVAL_ROWS, 256 * k) * 2 * max(w) * FLOAT
    return state + max(train, evaluate)


def available(device: str) -> tuple[float | None, str]:
    """(bytes free for training on `device`, where the figure comes from); None: unknown."""
    limit = os.environ.get("MLPLAB_MEMORY_GB")
    if limit is not None:
        try:
            value = float(limit)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise UserError(f"MLPLAB_MEMORY_GB={limit!r} must be a positive number of GB")
        return value * GB, "MLPLAB_MEMORY_GB"
    if device == "cuda":
        import torch

        return float(torch.cuda.mem_get_info()[0]), "free on the GPU"
    return _host_available(), "available in RAM"


def _host_available() -> float | None:
    """MemAvailable, or less where a cgroup (a container) caps this process's memory."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None
    try:
        cg = Path("/sys/fs/cgroup")
        cap = (cg / "memory.max").read_text().strip()
        if cap != "max":
            free = min(free, int(cap) - int((cg / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return float(free)


def check_fits(groups: list[list[RunConfig]], rows: dict[str, int], device: str,
               concurrent: int = 1, dataset_bytes: int = 0) -> None:
    """UserError when the largest group (times the groups training at once: local Dask
    workers) cannot fit in the memory free on `device`. rows: training images per dataset
    (a batch is at most that many); dataset_bytes: what moving the data to the device adds."""
    if not groups:
        return
    need = {i: group_bytes(g, min(g[0].batch_size, rows.get(g[0].dataset, g[0].batch_size)))
            for i, g in enumerate(groups)}
    big = max(need, key=need.__getitem__)
    total = need[big] * min(concurrent, len(groups)) + dataset_bytes
    free, source = available(device)
    if free is None or total <= free:
        return
    g = groups[big]
    distinct = list(dict.fromkeys(c.name for c in g))
    names = ", ".join(distinct[:2]) + (f", … ({len(distinct)} names)" if len(distinct) > 2 else "")
    times = f" x {min(concurrent, len(groups))} at once" if concurrent > 1 else ""
    raise UserError(
        f"the largest group ({g[0].architecture} x{len(g)}: {names}){times} needs at least "
        f"{total / GB:,.1f} GB for parameters, optimizer state and activations, and {device} has "
        f"{free / GB:,.1f} GB {source}; use narrower or fewer layers, a smaller batch_size, or "
        "fewer seeds")
