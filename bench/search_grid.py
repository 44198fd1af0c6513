"""Train one full grid for the search replay (bench/search_replay.py) and store its learning
curves as CSV: every configuration x every seed x every epoch, nothing pruned.

    python bench/search_grid.py --dataset mnist [--train-size 6000] [--seeds 8] [--epochs 15]
        [--out bench/runs/replay-mnist]

The grid (24 configurations) is built to hold slow starters: three learning rates (3e-4 is slow
at first), dropout 0 or 0.5, BatchNorm off/on, two widths. One thread (run it with nice); the
runs stay in --out, so an interrupted grid resumes. Writes
bench/results/replay-grid-<dataset>.csv (+ .json: the command, sizes and wall time).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

GRID = {"lr": [0.0003, 0.001, 0.003], "dropout": [0.0, 0.5], "batch_norm": [False, True]}
WIDTHS = ("128-64", "256-128")
COLUMNS = ("config", "width", "lr", "dropout", "batch_norm", "seed", "epoch", "train_loss",
           "train_acc", "val_loss", "val_acc")


def grid_suite(dataset: str, train_size: int, val_size: int, seeds: int, epochs: int):
    from mlplab.suite import parse_suite

    return parse_suite({
        "name": f"replay-{dataset}", "seeds": seeds,
        "defaults": {"dataset": dataset, "train_size": train_size, "val_size": val_size,
                     "epochs": epochs, "batch_size": 128, "optimizer": "adam", "activation": "relu"},
        "experiment": [{"name": f"w{w}", "architecture": w, "grid": GRID} for w in WIDTHS],
    }, f"replay-{dataset}")


def export(suite, out: Path, path: Path) -> int:
    """The curves of every cell, one row per (configuration, seed, epoch), suite order."""
    from mlplab.store import history, read_db

    db = read_db(out)
    n = 0
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for c in suite.cells():
            for h in history(db, c.run_id):
                w.writerow([c.name, c.architecture, c.lr, c.dropout, c.batch_norm, c.seed, h["epoch"],
                            *(f"{h[k]:.6g}" for k in COLUMNS[7:])])
                n += 1
    db.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--train-size", type=int, default=6000)
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out")
    args = ap.parse_args()
    import torch

    from mlplab.sweep import run_suite

    torch.set_num_threads(1)
    suite = grid_suite(args.dataset, args.train_size, args.val_size, args.seeds, args.epochs)
    out = Path(args.out or f"bench/runs/replay-{args.dataset}")
    t0 = time.perf_counter()
    run_suite(suite, out, device="cpu", checkpoint_every=60.0)
    wall = time.perf_counter() - t0
    path = Path("bench/results") / f"replay-grid-{args.dataset}.csv"
    n = export(suite, out, path)
    meta = {"command": "OMP_NUM_THREADS=1 nice -n 10 python " + " ".join(sys.argv),
            "dataset": args.dataset, "train_size": args.train_size, "val_size": args.val_size,
            "seeds": args.seeds, "epochs": args.epochs, "configurations": len(suite.runs()),
            "grid": {**GRID, "architecture": list(WIDTHS)}, "batch_size": 128, "optimizer": "adam",
            "threads": 1, "wall_s_this_call": round(wall, 1), "rows": n,
            "note": "wall time on a shared 2-core machine (other work beside it)"}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    print(f"{len(suite.cells())} runs, {n} curve rows in {wall:.0f} s -> {path}")


if __name__ == "__main__":
    main()
