"""mlplab benchmark: seconds per epoch against plain PyTorch, Keras 3 (when installed) and the
matmul floor, group throughput, and peak memory — all on the same data and device, in one run.

    python bench/bench.py [--device auto|cpu|cuda] [--epochs 3] [--rounds 3] [--train-size N]
                          [--ref GIT-REF]

--ref times mlplab as it was at a git ref too (a temporary worktree, put first on PYTHONPATH of
its measurements), taking turns with the current code in every round: before/after a change of
the engine, side by side, in one run.

Each measurement runs in its own subprocess (so peak memory is that configuration's own) and
times whole epochs: one pass over the training split plus evaluation of the 10,000 validation
images, which is what every contender has to do per epoch. The first epoch of each process is
warm-up. Shared machines drift (another tenant's load can slow everything by 25% for a minute),
so the contenders take turns: every round runs each measurement once, and the reported number
is the median over all rounds' timed epochs, with the spread of the per-round medians beside it.
Writes bench/results/<device>-<date>.json and prints a Markdown table with the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {
    # the seed suite's model 1 and model 3 (Keras-faithful settings)
    "m1": dict(architecture="784-512-256-10", batch_norm=True, dropout=0.0),
    "m3": dict(architecture="784-1024-512-256-128-64-10", batch_norm=True, dropout=0.5),
}
COMMON = dict(activation="relu", init="random_normal", init_stddev=[0.039, 0.55], optimizer="adam",
              lr=1e-3, eps=1e-7, batch_size=128)  # output layer: glorot_uniform, as the notebook


# ----------------------------------------------------------------------------------------------
# one measurement (child process)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    with open("/proc/self/status") as f:  # peak resident set of this process
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _splits(args):
    from mlplab import data

    ds = data.load("mnist")
    return data.split(ds, "split", 10_000, args.train_size)


def run_mlplab(args, device, model, k):
    from mlplab.config import RunConfig
    from mlplab.train import train_group

    cfgs = [RunConfig(**COMMON, **MODELS[model], epochs=args.epochs, seed=s,
                      precision=args.precision) for s in range(k)]
    res = train_group(cfgs, _splits(args), device)
    return [h["seconds"] for h in res[0].history]


def run_eager(args, device, model, k):
    """The obvious PyTorch code a user would write: nn.Sequential, torch.optim.Adam,
    per-batch indexing of a float tensor, loss.backward(), then a no-grad validation pass."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    spec = MODELS[model]
    widths = [int(w) for w in spec["architecture"].split("-")]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers += [nn.ReLU(), nn.BatchNorm1d(widths[i + 1], momentum=0.01, eps=1e-3)]
            if spec["dropout"]:
                layers.append(nn.Dropout(spec["dropout"]))
    net = nn.Sequential(*layers).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    s = _splits(args)
    x = s.x_train.float().div(255).to(device)
    y = s.y_train.to(device)
    xv, yv = s.x_val.float().div(255).to(device), s.y_val.to(device)
    times = []
    for _ in range(args.epochs):
        _sync(device)
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(len(x), device=device)
        for i in range(0, len(x), 128):
            idx = perm[i:i + 128]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            acc = (net(xv).argmax(1) == yv).float().mean().item()
        _sync(device)
        times.append(time.perf_counter() - t0)
    assert acc > 0.2  # it trained (guards against timing a broken loop)
    return times


def run_keras(args, device, model, k):
    """The notebook's own model and fit() call (bench/notebook_keras.py)."""
    import notebook_keras

    keras = notebook_keras.keras()
    spec = MODELS[model]
    net = notebook_keras.build(tuple(int(w) for w in spec["architecture"].split("-")), spec["dropout"])
    s = _splits(args)
    x, y = s.x_train.float().div(255).numpy(), notebook_keras.one_hot(s.y_train.numpy())
    xv, yv = s.x_val.float().div(255).numpy(), notebook_keras.one_hot(s.y_val.numpy())
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    net.fit(x, y, batch_size=128, epochs=args.epochs, validation_data=(xv, yv), verbose=0,
            callbacks=[Timer()])
    return times


def run_floor(args, device, model, k):
    """The same matrix products alone: per step, the forward product of every layer and the two
    backward products (input gradient, except for the first layer, and weight gradient), plus
    the validation forward products; nothing else."""
    import torch

    widths = [int(w) for w in MODELS[model]["architecture"].split("-")]
    n = args.train_size or 50_000
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(a, b, generator=g).to(device) * 0.05 for a, b in zip(widths, widths[1:], strict=False)]
    batch = torch.randn(128, 784, generator=g).to(device)
    outs = [torch.randn(128, w, generator=g).to(device) for w in widths]
    val = torch.randn(2048, 784, generator=g).to(device)
    steps, val_chunks = (n + 127) // 128, 10_000 // 2048 + 1
    times = []
    for _ in range(args.epochs):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            h = batch
            for w in ws:
                h = h @ w  # forward
            for i, w in enumerate(ws):
                _ = outs[i].T @ outs[i + 1]  # weight gradient [in, out]
                if i:
                    _ = outs[i + 1] @ w.T  # input gradient
        for _ in range(val_chunks):
            h = val
            for w in ws:
                h = h @ w
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


RUNNERS = {"mlplab": run_mlplab, "eager": run_eager, "keras": run_keras, "floor": run_floor}


def child(args) -> None:
    import torch

    from mlplab.train import resolve_device

    device = resolve_device(args.device)
    torch.manual_seed(0)
    times = RUNNERS[args.runner](args, device, args.model, args.k)
    _sync(device)
    warm = times[1:] or times
    print(json.dumps({"seconds_per_epoch": statistics.median(warm), "epochs": times,
                      "peak_mb": _peak_mb(device)}))


# ----------------------------------------------------------------------------------------------
# the driver


def measure(args, runner, model, k=1) -> dict | None:
    """One measurement in a fresh process: its epoch times and peak memory (None if it failed)."""
    env = dict(os.environ)
    if runner == "mlplab-ref":  # the same measurement on the code of --ref
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.ref_src, env.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, "--child", runner.removesuffix("-ref"), "--model", model,
           "--k", str(k), "--device", args.device, "--epochs", str(args.epochs),
           "--precision", args.precision]
    if args.train_size:
        cmd += ["--train-size", str(args.train_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {runner} {model} k={k}: skipped ({last})", file=sys.stderr)
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {runner:7s} {model} k={k:<3d} {result['seconds_per_epoch']:.3f} s/epoch  "
          f"peak {result['peak_mb']:.0f} MB", file=sys.stderr)
    return result


def combine(rounds: list[dict | None]) -> dict | None:
    """Rounds of one measurement -> the median of every round's timed epochs, the spread of the
    per-round medians, and the largest peak memory."""
    done = [r for r in rounds if r]
    if not done:
        return None
    timed = [t for r in done for t in (r["epochs"][1:] or r["epochs"])]
    medians = [r["seconds_per_epoch"] for r in done]
    return {"seconds_per_epoch": statistics.median(timed), "round_medians": medians,
            "spread": [min(medians), max(medians)], "rounds": len(done),
            "peak_mb": max(r["peak_mb"] for r in done)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--epochs", type=int, default=3, help="per measurement; the first is warm-up")
    p.add_argument("--rounds", type=int, default=3, help="times each measurement is repeated, in turns")
    p.add_argument("--train-size", type=int, default=None, help="default: all 50,000")
    p.add_argument("--groups", default=None, help="group sizes, e.g. 1,4,16 (default by device)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--models", default=",".join(MODELS), help="which single models, e.g. m1")
    p.add_argument("--runners", default=",".join(RUNNERS), help="which contenders, e.g. mlplab,floor")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--ref", default=None, help="also time mlplab at this git ref, in turns")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default="m1", help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.runner = args.child
        return child(args)

    import torch

    from mlplab.train import resolve_device

    device = resolve_device(args.device)
    groups = [int(g) for g in args.groups.split(",")] if args.groups else (
        [1, 4, 16, 64] if device.type == "cuda" else [1, 4, 16])
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    print(f"benchmark on {device.type} ({name}), {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds of {args.epochs} epochs per measurement", file=sys.stderr)
    models, runners = args.models.split(","), args.runners.split(",")
    worktree = None
    if args.ref:
        worktree = Path(tempfile.mkdtemp(prefix="mlplab-ref-"))
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.ref], check=True,
                       capture_output=True)
        args.ref_src = str(worktree / "src")
        runners.append("mlplab-ref")
    grouped_runners = ["mlplab"] + (["mlplab-ref"] if args.ref else [])
    jobs = [("single", r, m, 1) for m in models for r in runners] + [  # (table, runner, model, K)
        ("groups", r, "m1", k) for k in groups for r in grouped_runners]
    raw: dict[tuple, list] = {j: [] for j in jobs}
    try:
        for i in range(args.rounds):  # contenders take turns, so drift hits them all alike
            print(f"round {i + 1}/{args.rounds}", file=sys.stderr)
            for job in jobs:
                raw[job].append(measure(args, *job[1:]))
    finally:
        if worktree:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], capture_output=True)
    single = {m: {r: combine(raw[("single", r, m, 1)]) for r in runners} for m in models}
    grouped = {}
    for k in groups:
        r = combine(raw[("groups", "mlplab", "m1", k)])
        if r:
            grouped[k] = {**r, "model_epochs_per_s": k / r["seconds_per_epoch"]}
        before = combine(raw.get(("groups", "mlplab-ref", "m1", k), []))
        if r and before:
            grouped[k]["ref"] = before
    result = {"device": device.type, "device_name": name, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "date": dt.datetime.now().isoformat(timespec="seconds"),
              "train_size": args.train_size or 50_000, "epochs": args.epochs, "rounds": args.rounds,
              "precision": args.precision, "single": single, "groups": grouped,
              "ref": args.ref}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"-vs-{args.ref}" if args.ref else ""
    path = out / f"{device.type}-{dt.date.today().isoformat()}{tag}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\nwritten: {path}", file=sys.stderr)


def markdown(r: dict) -> str:
    """The speed table of docs/results.md: seconds per epoch and ratios, then group throughput."""
    lines = [f"Device: {r['device']} ({r['device_name']}, {r['threads']} threads), torch "
             f"{r['torch']}, {r['train_size']:,} training images, {r['precision']}, {r['date']}; "
             f"median of {r.get('rounds', 1)} rounds (range of the round medians in brackets).", "",
             "| model | mlplab s/epoch | plain PyTorch | Keras 3 | matmul floor | "
             "mlplab vs PyTorch | mlplab vs Keras | mlplab / floor | peak MB (mlplab / PyTorch) |",
             "|---|---|---|---|---|---|---|---|---|"]
    sec = lambda d: d["seconds_per_epoch"] if d else None  # noqa: E731
    for model, res in r["single"].items():
        m, e, k, f = (sec(res.get(x)) for x in ("mlplab", "eager", "keras", "floor"))
        cell = lambda v, d=None: (f"{v:.3f}" + (  # noqa: E731
            f" ({d['spread'][0]:.2f}–{d['spread'][1]:.2f})" if d and d.get("spread") else "")) if v else "—"
        ratio = lambda a, b: f"{b / a:.2f}× faster" if a and b else "—"  # noqa: E731
        peak = lambda d: f"{d['peak_mb']:.0f}" if d else "—"  # noqa: E731
        lines.append(f"| {model} {MODELS[model]['architecture']} | {cell(m, res.get('mlplab'))} | "
                     f"{cell(e, res.get('eager'))} | {cell(k, res.get('keras'))} | "
                     f"{cell(f, res.get('floor'))} | {ratio(m, e)} | {ratio(m, k)} | "
                     f"{f'{m / f:.2f}' if m and f else '—'} | "
                     f"{peak(res.get('mlplab'))} / {peak(res.get('eager'))} |")
    lines += ["", "| group size K (model m1) | s/epoch | model-epochs/s | ms per model-epoch | "
              "peak MB |", "|---|---|---|---|---|"]
    for k, g in r["groups"].items():
        lines.append(f"| {k} | {g['seconds_per_epoch']:.3f} | {g['model_epochs_per_s']:.2f} | "
                     f"{1000 / g['model_epochs_per_s']:.1f} | {g['peak_mb']:.0f} |")
    if r.get("ref"):  # before/after: the current code against --ref, taken in turns
        lines += ["", f"| measurement | mlplab at {r['ref']} s/epoch | mlplab now s/epoch | now / before |",
                  "|---|---|---|---|"]
        rows = [(f"{m} single", res.get("mlplab-ref"), res.get("mlplab")) for m, res in r["single"].items()]
        rows += [(f"m1 group K={k}", g.get("ref"), g) for k, g in r["groups"].items()]
        for what, before, now in rows:
            if before and now:
                lines.append(f"| {what} | {before['seconds_per_epoch']:.3f} "
                             f"({before['spread'][0]:.2f}–{before['spread'][1]:.2f}) | "
                             f"{now['seconds_per_epoch']:.3f} ({now['spread'][0]:.2f}–"
                             f"{now['spread'][1]:.2f}) | "
                             f"{now['seconds_per_epoch'] / before['seconds_per_epoch']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
