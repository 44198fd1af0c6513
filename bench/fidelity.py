"""Fidelity to Keras: the `seed` suite's six models trained by mlplab and by Keras 3 (the notebook's
own code, bench/notebook_keras.py), the same seeds and epochs, validated on the test set as the
notebook does; per-epoch mean validation loss and accuracy side by side, with the seed-to-seed
spread, and a verdict per model.

    python bench/fidelity.py [--epochs 10] [--seeds 3] [--models "2-hidden BN,..."] [--threads N]

Verdict: Welch's t-test between the two tools' seeds at every epoch, for validation loss and
accuracy. A model is "within noise" when no epoch's difference has p < 0.01 and the last epoch's
has p >= 0.05 for both (with 3 seeds a test can only flag a gap that is large against the spread;
the spreads are printed so a reader can judge). Validation loss is compared as the plain mean
cross-entropy for both tools; Keras' own `val_loss` (which clips probabilities at 1e-7) is kept
in the JSON beside it. As a measured check of one known difference, mlplab's final models are
also evaluated with Keras' biased BatchNorm moving variance.

Results are written after every model (bench/results/fidelity-<date>.json), so a long run that
is stopped keeps what it finished; --resume skips the models already in that file.

--variant changes mlplab's side only, to measure what one difference does (Keras' side is the
notebook's, and --keras-from reuses its curves from an earlier result with the same seeds and
epochs): `legacy-output` draws the output layer as mlplab did before `output_init` existed
(RandomNormal(0.55), the hidden layers' last stddev); `adam-eps-upper` sets Adam's epsilon to
3.16e-6, the largest value Keras' placement of epsilon amounts to (eps / sqrt(1 - beta2^t) at
t = 1; torch adds eps to the bias-corrected root, Keras to the uncorrected one).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
from pathlib import Path

import notebook_keras
import numpy as np
import torch

from mlplab import data
from mlplab.evaluate import logits, loss_acc
from mlplab.model import StackedMLP
from mlplab.stats import mean_std, welch
from mlplab.suite import apply_overrides, load_suite
from mlplab.train import train_group

VARIANTS = {"notebook": {}, "legacy-output": {"output_init": "random_normal"},
            "adam-eps-upper": {"eps": 1e-7 / math.sqrt(1 - 0.999)}}


def mlplab_curves(cfgs, splits) -> tuple[list[list[dict]], list[dict]]:
    """Train the seeds of one model as one group: per seed, per epoch {val_loss, val_acc}; and per
    seed the final model evaluated with Keras' biased BatchNorm moving variance."""
    results = train_group(cfgs, splits, "cpu")
    curves = [[{"val_loss": h["val_loss"], "val_acc": h["val_acc"], "seconds": h["seconds"]}
               for h in r.history] for r in results]
    return curves, [biased_variance_eval(r, splits) for r in results]


def biased_variance_eval(res, splits) -> dict:
    """mlplab keeps torch's unbiased batch variance in its moving average, Keras the biased one:
    at a batch of B the two differ by B/(B-1) in every step, so scaling the final moving variance
    by (B-1)/B gives (to the last partial batch) the model Keras' convention would have kept."""
    b = res.cfg.batch_size
    state = {n: t.unsqueeze(0) * ((b - 1) / b if n.startswith("var") else 1.0)
             for n, t in res.state.items()}
    model = StackedMLP([res.cfg], "cpu", state)
    loss, acc = loss_acc(logits(model, splits.x_val), splits.y_val)
    return {"val_loss": float(loss[0]), "val_acc": float(acc[0])}


def keras_curve(cfg, splits, seed: int) -> list[dict]:
    """The notebook's model.fit(..., validation_data=(X_test, Y_test)) for one seed."""
    keras = notebook_keras.keras()
    keras.utils.set_random_seed(seed)
    net = notebook_keras.build(cfg.widths, cfg.dropout, tuple(cfg.stddevs()[:-1]))
    x = splits.x_train.float().div(255).numpy()
    y = notebook_keras.one_hot(splits.y_train.numpy())
    xv = splits.x_val.float().div(255).numpy()
    yv_int = splits.y_val.numpy()
    rows: list[dict] = []

    class Curve(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.t0
            p = np.asarray(net.predict(xv, batch_size=1024, verbose=0), dtype=np.float64)
            p_true = p[np.arange(len(yv_int)), yv_int]
            rows.append({"val_loss": float(-np.log(np.maximum(p_true, 1e-300)).mean()),
                         "val_acc": float((p.argmax(1) == yv_int).mean()),
                         "keras_val_loss": float(logs["val_loss"]), "seconds": seconds})

    net.fit(x, y, batch_size=cfg.batch_size, epochs=cfg.epochs,
            validation_data=(xv, notebook_keras.one_hot(yv_int)), verbose=0, callbacks=[Curve()])
    return rows


def compare(ours: list[list[dict]], theirs: list[list[dict]]) -> dict:
    """Per epoch: mean and std over seeds of both tools, Welch p; the verdict."""
    epochs = []
    for e in range(min(len(ours[0]), len(theirs[0]))):
        row = {"epoch": e + 1}
        for metric in ("val_loss", "val_acc"):
            a, b = [c[e][metric] for c in ours], [c[e][metric] for c in theirs]
            (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
            row[metric] = {"mlplab": [ma, sa], "keras": [mb, sb], "p": welch(a, b)}
        epochs.append(row)
    ps = [r[m]["p"] for r in epochs for m in ("val_loss", "val_acc")]
    last = [epochs[-1][m]["p"] for m in ("val_loss", "val_acc")]
    flagged = [r["epoch"] for r in epochs if min(r["val_loss"]["p"], r["val_acc"]["p"]) < 0.01]
    within = not flagged and min(last) >= 0.05 and all(math.isfinite(p) for p in ps)
    return {"epochs": epochs, "epochs_with_p_below_0.01": flagged,
            "verdict": "within noise" if within else "NOT within noise"}


def markdown(result: dict) -> str:
    lines = [f"Fidelity, {result['seeds']} seeds x {result['epochs']} epochs, validation on the test "
             f"set ({result['date']}, {result['threads']} CPU threads): mean ± std over seeds.", "",
             "| model | epoch | val loss mlplab | val loss Keras | p | val acc mlplab | val acc Keras | p "
             "| verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        rows = m["comparison"]["epochs"]
        for r in (rows[0], rows[-1]):
            cells = [f"{r[m_][tool][0]:.4f} ± {r[m_][tool][1]:.4f}" if tool != "p" else f"{r[m_]['p']:.2f}"
                     for m_ in ("val_loss", "val_acc") for tool in ("mlplab", "keras", "p")]
            verdict = m["comparison"]["verdict"] if r is rows[-1] else ""
            lines.append(f"| {name} | {r['epoch']} | {' | '.join(cells)} | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--models", default=None, help="comma-separated seed-suite names (default: all six)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/fidelity-<date>.json)")
    p.add_argument("--resume", action="store_true", help="keep the models already in --out")
    p.add_argument("--variant", default="notebook", choices=list(VARIANTS),
                   help="a change on mlplab's side only (see the module docstring)")
    p.add_argument("--keras-from", default=None, help="reuse Keras' curves from this result JSON")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = apply_overrides(load_suite("seed"), epochs=args.epochs, seeds=args.seeds)
    runs = suite.cells()
    names = list(dict.fromkeys(c.name for c in runs))
    wanted = args.models.split(",") if args.models else names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        sys.exit(f"--models: {', '.join(unknown)} not in the seed suite ({', '.join(names)})")
    suffix = "" if args.variant == "notebook" else f"-{args.variant}"
    out = Path(args.out or Path(__file__).parent / "results" / f"fidelity{suffix}-{dt.date.today()}.json")
    earlier = json.loads(Path(args.keras_from).read_text()) if args.keras_from else None
    if earlier and (earlier["epochs"], earlier["seeds"]) != (args.epochs, args.seeds):
        sys.exit(f"--keras-from {args.keras_from}: {earlier['seeds']} seeds x {earlier['epochs']} epochs, "
                 f"not {args.seeds} x {args.epochs}")
    result = {"date": dt.datetime.now().isoformat(timespec="seconds"), "variant": args.variant,
              "mlplab_changes": VARIANTS[args.variant], "epochs": args.epochs,
              "seeds": args.seeds, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "keras": notebook_keras.keras().__version__, "validation": "test set", "models": {}}
    if args.resume and out.exists():
        result["models"] = json.loads(out.read_text())["models"]
    splits = data.split(data.load("mnist"), "test")
    for name in wanted:
        if name in result["models"]:
            continue
        cfgs = [c.model_copy(update=VARIANTS[args.variant]) for c in runs if c.name == name]
        t0 = time.perf_counter()
        ours, biased = mlplab_curves(cfgs, splits)
        t1 = time.perf_counter()
        if earlier and name in earlier["models"]:
            theirs = earlier["models"][name]["keras"]
        else:
            theirs = [keras_curve(c, splits, c.seed) for c in cfgs]
        t2 = time.perf_counter()
        result["models"][name] = {
            "architecture": cfgs[0].architecture, "dropout": cfgs[0].dropout,
            "mlplab": ours, "keras": theirs, "mlplab_biased_bn_variance": biased,
            "seconds": {"mlplab": t1 - t0, "keras": t2 - t1},
            "comparison": compare(ours, theirs)}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(out)  # a stopped run keeps every finished model
        print(f"{name}: {result['models'][name]['comparison']['verdict']} "
              f"(mlplab {t1 - t0:.0f} s, Keras {t2 - t1:.0f} s)", file=sys.stderr, flush=True)
    print(markdown(result))
    print(f"\nwritten: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
