"""TPE in batches (mlplab's method = "tpe") against random search with halving, replayed on a
full grid's stored learning curves (bench/results/replay-grid-*.csv: 24 configurations x 8 seeds
x 15 epochs), so it costs no training. The space is the grid's finite set (four choices).

    python bench/search_tpe.py [--reps 20] [--batch 6]

A repetition draws 3 of the 8 seeds. Random search with halving = one halving run (rule "noise",
eta 6, min_epochs 1) over all 24 configurations in a random order: its best mean final val_acc
(over configurations trained to the end) at its model-epochs. TPE: batches of K proposals from
search_tpe.propose, halving inside each batch by the same rule, outcomes told back, until it has
spent as many model-epochs; reported: the model-epochs at which TPE first matches random's best.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

import numpy as np

from mlplab.pruning import decide, rungs
from mlplab.search import SearchSpec
from mlplab.search_tpe import propose

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("width", "lr", "dropout", "batch_norm")


def load(path: Path):
    curves: dict[tuple, dict] = {}
    for r in csv.DictReader(path.open()):
        curves.setdefault(tuple(r[k] for k in KEYS), {}).setdefault(int(r["seed"]), {})[int(r["epoch"])] = \
            float(r["val_acc"])
    return {k: np.array([[s[e] for e in sorted(s)] for _, s in sorted(v.items())]) for k, v in curves.items()}


def halve(configs: list[tuple], curves, seeds, spec: SearchSpec) -> tuple[int, dict[tuple, float]]:
    """(model-epochs, {configuration trained to the end: mean final val_acc})."""
    epochs = curves[configs[0]].shape[1]
    hist = {i: [[{"val_acc": float(a), "val_loss": 0.0} for a in curves[c][s]] for s in seeds]
            for i, c in enumerate(configs)}
    stop = {i: epochs for i in hist}
    for r in rungs(epochs, spec.min_epochs, spec.eta):
        alive = {str(i): [(h[:r], "running") for h in hist[i]] for i in hist if stop[i] == epochs}
        d = decide(r, alive, {k: epochs for k in alive}, spec.eta, "val_acc", spec.rule, spec.alpha)
        for k in d.pruned:
            stop[int(k)] = r
    spent = sum(stop.values()) * len(seeds)
    return spent, {configs[i]: float(curves[configs[i]][seeds, -1].mean()) for i in hist if stop[i] == epochs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="mnist")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=6)
    a = ap.parse_args()
    curves = load(RESULTS / f"replay-grid-{a.grid}.csv")
    space = {k: {"choice": sorted({c[i] for c in curves})} for i, k in enumerate(KEYS)}
    rows = []
    for rep in range(a.reps):
        rng = random.Random(rep)
        seeds = sorted(rng.sample(range(8), 3))
        spec = SearchSpec(method="random", samples=1, seed=rep)
        order = list(curves)
        rng.shuffle(order)
        budget, found = halve(order, curves, seeds, spec)
        target = max(found.values())
        tspec = SearchSpec(method="tpe", trials=10_000, batch=a.batch, seed=rep)
        told, spent, best, reached, b = [], 0, -1.0, None, 0
        while spent < budget:
            batch = [tuple(v[k] for k in KEYS) for v in propose(space, tspec, b, told)]
            cost, done = halve(batch, curves, seeds, tspec)
            spent, b = spent + cost, b + 1
            for c in batch:  # pruned ones told as pruned with their mean at epoch 1 (a proxy)
                v = done.get(c, float(curves[c][seeds, 0].mean()))
                told.append({"values": dict(zip(KEYS, c, strict=True)),
                             "state": "COMPLETE" if c in done else "PRUNED", "value": v, "epoch": 1})
            best = max([best, *done.values()])
            if reached is None and best >= target - 1e-12:
                reached = spent
        rows.append((rep, budget, target, best, reached))
        print(f"rep {rep}: random+halving best {target:.4f} at {budget} model-epochs; tpe best {best:.4f}, "
              f"reached random's best at {reached} model-epochs", flush=True)
    hit = [r for r in rows if r[4] is not None]
    half = [r for r in hit if r[4] <= r[1] / 2]
    print(f"{a.grid}, batch {a.batch}, {a.reps} reps: TPE matched random+halving's best in "
          f"{len(hit)}/{a.reps} "
          f"within its budget, in at most half of it in {len(half)}/{a.reps}; mean regret at equal budget "
          f"{np.mean([max(0, r[2] - r[3]) for r in rows]):.4f}")


if __name__ == "__main__":
    main()
