"""What the population BatchNorm statistics (bn_eval = "precise") gain over the moving ones, by
number of updates, from results folders of bench/bn_updates*.toml or bench/bn_small.toml: each
precise run's metrics hold both (bn_moving: what the moving statistics gave, same weights).

    python bench/bn_gap.py OUT [OUT ...]
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from statistics import mean


def gains(outs: list[str]) -> dict[tuple[str, int, float], list[tuple[float, float]]]:
    """(model, updates, momentum) -> [(moving, precise) test accuracy] of each seed."""
    found: dict[tuple[str, int, float], list[tuple[float, float]]] = {}
    for out in outs:
        db = sqlite3.connect(f"file:{Path(out) / 'mlplab.db'}?mode=ro", uri=True)
        for name, cfg, metrics in db.execute("SELECT experiment, config, metrics FROM runs"):
            cfg, metrics = json.loads(cfg), json.loads(metrics)
            if "bn_moving" in metrics:
                key = (name, metrics["bn_updates"], cfg["bn_momentum"])
                found.setdefault(key, []).append((metrics["bn_moving"]["test_acc"], metrics["test_acc"]))
        db.close()
    return found


def main(outs: list[str]) -> None:
    print("| model | updates | momentum | start weight | seeds | test acc, moving | test acc, "
          "precise | gain, points (min…max) |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, n, m), accs in sorted(gains(outs).items(), key=lambda kv: (kv[0][0].split("[")[0], kv[0][1])):
        g = [100 * (p - mv) for mv, p in accs]
        print(f"| {name} | {n:,} | {m:g} | {m ** n:.3f} | {len(accs)} | "
              f"{mean(a for a, _ in accs):.4f} | {mean(p for _, p in accs):.4f} | "
              f"{mean(g):+.2f} ({min(g):+.2f}…{max(g):+.2f}) |")


if __name__ == "__main__":
    main(sys.argv[1:])
