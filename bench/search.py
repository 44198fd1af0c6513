"""Successive halving against the full grid: the same suite trained both ways, side by side (two
processes started together, each with the same thread count), then model-epochs, wall time and
whether halving found the full grid's winner, or one the full grid cannot tell apart from it
(Welch's t-test on validation accuracy over seeds, as the comparison table does).

    python bench/search.py [--suite search] [--seeds 3] [--epochs N] [--threads 1] [--out DIR]
        [--rule noise|top] [--eta N] [--alpha A] [--min-epochs N] [--sequential]

A grid suite gets [search] method = "halving" for its pruned run; a random-search suite is
trained in full with halving = false. --rule/--eta/--alpha/--min-epochs override the suite's
[search] for the pruned run (--rule alone takes that rule's default eta). Results:
bench/results/search-<suite>-<rule>-<date>.json. The run folders stay in --out, so an
interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

from mlplab.compare import comparison
from mlplab.records import RunRecord
from mlplab.search import parse_search
from mlplab.store import read_db, rows
from mlplab.suite import apply_overrides, load_suite
from mlplab.sweep import budget, run_suite


def variants(suite, rule: dict | None = None):
    """(full grid, halving) versions of one suite; `rule` overrides [search] keys of the pruned
    run (rule, eta, alpha, min_epochs), validated as a [search] table is."""
    table = suite.search.model_dump(exclude_none=True) if suite.search else {}
    full = {**table, "halving": False} if table.get("method") == "random" else \
        {**table, "method": "grid", "halving": False}
    pruned = {**table, "halving": True, **({} if table.get("method") == "random" else {"method": "halving"}),
              **(rule or {})}
    if rule and "rule" in rule and "eta" not in rule:
        pruned.pop("eta", None)  # the rule's own default eta
    return (suite.model_copy(update={"search": parse_search(full, "full grid")}),
            suite.model_copy(update={"search": parse_search(pruned, "halving")}))


def _train(suite, out: str, threads: int, queue) -> None:
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    run_suite(suite, out, device="cpu", checkpoint_every=60.0)
    queue.put((out, time.perf_counter() - t0))


def summarize(suite, out: Path, wall: float) -> dict:
    db = read_db(out)
    found = rows(db, [c.run_id for c in suite.cells()])
    db.close()
    table = comparison([RunRecord.from_row(r) for r in found])
    best = next(e for e in table if e.ranked)
    return {"wall_s": round(wall, 1), **budget(found, suite.cells()),
            "winner": best.experiment, "winner_val_acc": [best.mean["val_acc"], best.std["val_acc"]],
            "winner_test_acc": [best.mean["test_acc"], best.std["test_acc"]],
            "table": [{"name": e.experiment, "n": e.n, "val_acc": e.mean["val_acc"],
                       "val_acc_std": e.std["val_acc"], "test_acc": e.mean["test_acc"],
                       "pruned_at": e.pruned_at, "marker": e.marker, "p": e.p}
                      for e in table]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="search")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/runs/search")
    ap.add_argument("--rule", choices=("noise", "top"), help="the pruned run's rule (default: the suite's)")
    ap.add_argument("--eta", type=int)
    ap.add_argument("--alpha", type=float)
    ap.add_argument("--min-epochs", type=int)
    ap.add_argument("--sequential", action="store_true",
                    help="train the full grid, then the pruned run (one process at a time)")
    args = ap.parse_args()
    suite = apply_overrides(load_suite(args.suite), seeds=args.seeds, epochs=args.epochs)
    rule = {k: v for k, v in (("rule", args.rule), ("eta", args.eta), ("alpha", args.alpha),
                              ("min_epochs", args.min_epochs)) if v is not None}
    full, halving = variants(suite, rule)
    h = halving.search  # the pruned run's own folder: runs of another rule are not resumed into it
    outs = {"full": str(Path(args.out) / f"{suite.name}-full"),
            "halving": str(Path(args.out) / (f"{suite.name}-halving-{h.rule}-eta{h.eta}-min{h.min_epochs}"
                                             + (f"-a{h.alpha}" if h.rule == "noise" else "")))}
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_train, args=(s, outs[k], args.threads, queue))
             for k, s in (("full", full), ("halving", halving))]
    walls = {}
    for p in procs:
        p.start()
        if args.sequential:
            walls.update([queue.get()])
            p.join()
    walls.update(queue.get() for _ in range(len(procs) - len(walls)))
    for p in procs:
        p.join()
    res = {k: summarize(s, Path(outs[k]), walls[outs[k]])
           for k, s in (("full", full), ("halving", halving))}
    # where halving's winner stands in the full grid's table
    entry = next(e for e in res["full"]["table"] if e["name"] == res["halving"]["winner"])
    same = entry["marker"] == "best"
    verdict = ("the same winner" if same else
               "not distinguishable from the full grid's winner" if entry["marker"] == "≈" else
               "worse than the full grid's winner (p < 0.05)" if entry["marker"] == "" else
               f"marked {entry['marker']!r} in the full grid")
    result = {
        "date": dt.date.today().isoformat(), "suite": suite.name, "seeds": len(suite.seeds),
        "configurations": len(suite.runs()), "threads_per_process": args.threads,
        "command": "python " + " ".join(sys.argv),
        "search": halving.search.model_dump(),
        "side_by_side": ("one after the other" if args.sequential
                         else "both started together, one process each"), **res,
        "model_epochs_ratio": round(res["halving"]["model_epochs"] / res["full"]["model_epochs"], 3),
        "wall_ratio": round(res["halving"]["wall_s"] / res["full"]["wall_s"], 3),
        "halving_winner_in_full_grid": {"marker": entry["marker"], "p": entry["p"],
                                        "val_acc": entry["val_acc"]},
        "verdict": verdict,
    }
    path = Path("bench/results") / f"search-{suite.name}-{halving.search.rule}-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"{suite.name}: full grid {res['full']['model_epochs']} model-epochs in "
          f"{res['full']['wall_s']:.0f} s, halving {res['halving']['model_epochs']} in "
          f"{res['halving']['wall_s']:.0f} s ({result['model_epochs_ratio']:.0%} of the "
          f"model-epochs, {result['wall_ratio']:.0%} of the wall time); halving's winner "
          f"{res['halving']['winner']!r}: {verdict}\n-> {path}")


if __name__ == "__main__":
    main()
