"""mlplab's fused group against PyTorch's ensembling idiom, per training step.

The idiom (torch.func docs, "Model ensembling"): K `nn.Module`s, `torch.func.stack_module_state`
to stack their parameters, `vmap(functional_call)` for the forward, autograd for the backward, a
plain `torch.optim` optimizer over the stacked parameters (elementwise optimizers such as SGD and
Adam then update every member as it would alone). mlplab: `StackedMLP` + its stacked optimizer
+ `Step` (forward with a tape, explicit backward, layer-by-layer update), as `train_group` runs it.

Both variants do the same work per step: gather a [K, b] batch from uint8 images, x / 255,
forward, cross-entropy per member, backward, update. One thread. On a shared machine the load
changes from second to second, so the variants are timed in short alternating blocks: in every
round, for each optimizer and K, every variant is built, warmed up, then timed for `--blocks`
blocks of `--steps` steps each, taking turns block by block (the order reversed every other
block); a variant's round time is its fastest block (the least disturbed), and the reported
figures are the median over rounds of those times and of the per-round ratios to mlplab.
Before timing, one SGD step from identical weights is checked to give the same weights in both
(so the two time the same computation).

    python bench/vmap.py [--ks 1,8,32] [--rounds 5] [--blocks 5] [--steps 4] [--fused]
                         [--out bench/results/vmap-cpu.json]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from mlplab.config import RunConfig
from mlplab.model import StackedMLP
from mlplab.optim import make_optimizer
from mlplab.step import Step

ARCH = "784-256-128-10"
OPT = {"sgd": dict(optimizer="sgd", lr=0.01), "adam": dict(optimizer="adam", lr=1e-3)}


def cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    fields = {}
    for line in info.splitlines():
        if ":" in line:
            key, value = (s.strip() for s in line.split(":", 1))
            fields.setdefault(key, value)
    flags = fields.get("flags", "").split()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return (f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')}; {' '.join(isa)})")


def mlplab_variant(opt: str, k: int, x, y):
    cfgs = [RunConfig(architecture=ARCH, seed=s, **OPT[opt]) for s in range(k)]
    model = StackedMLP(cfgs)
    step = Step(model, make_optimizer(list(model.parameters()), cfgs), x, y, cfgs)
    return step, model


def _modules(k: int) -> list[nn.Module]:
    widths = [int(w) for w in ARCH.split("-")]
    out = []
    for s in range(k):
        torch.manual_seed(s)
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        out.append(nn.Sequential(*layers))
    return out


def vmap_variant(opt: str, k: int, x, y, fused: bool = False):
    """PyTorch's ensembling idiom, trained: returns (step(idx), params)."""
    models = _modules(k)
    params, buffers = stack_module_state(models)  # {name: [K, ...]}, requires_grad
    base = copy.deepcopy(models[0]).to("meta")

    def loss_one(p, b, xb, yb):
        return nn.functional.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    losses = vmap(loss_one)
    kw = {"fused": True} if fused else {}
    o = (torch.optim.SGD(params.values(), lr=OPT["sgd"]["lr"], **kw) if opt == "sgd" else
         torch.optim.Adam(params.values(), lr=OPT["adam"]["lr"], eps=1e-7, **kw))

    def step(idx):
        kk, b = idx.shape
        xb = x.index_select(0, idx.reshape(-1)).view(kk, b, -1).float().div_(255)
        yb = y[idx]
        o.zero_grad(set_to_none=False)
        losses(params, buffers, xb, yb).sum().backward()  # members' losses are independent terms
        o.step()

    return step, params


def check_same_step(x, y, idx) -> float:
    """One SGD step of K = 2 from the same weights: the largest weight difference."""
    step_m, model = mlplab_variant("sgd", 2, x, y)
    step_v, params = vmap_variant("sgd", 2, x, y)
    with torch.no_grad():
        for i in range(3):  # nn.Linear keeps weight as [out, in]; mlplab as [K, in, out]
            params[f"{2 * i}.weight"].copy_(model.get_parameter(f"w{i}").transpose(1, 2))
            params[f"{2 * i}.bias"].copy_(model.get_parameter(f"b{i}").squeeze(1))
    step_m(idx)
    step_v(idx)
    diff = 0.0
    for i in range(3):
        diff = max(diff, (params[f"{2 * i}.weight"].detach()
                          - model.get_parameter(f"w{i}").transpose(1, 2)).abs().max().item(),
                   (params[f"{2 * i}.bias"].detach()
                    - model.get_parameter(f"b{i}").squeeze(1)).abs().max().item())
    return diff


def time_block(step, idxs) -> float:
    """Mean seconds per step over idxs."""
    t0 = time.perf_counter()
    for idx in idxs:
        step(idx)
    return (time.perf_counter() - t0) / len(idxs)


def markdown(result: dict) -> str:
    """The table docs/results.md shows: ms per step (range over rounds), ratios to mlplab."""
    variants = [v for v in ("mlplab", "vmap", "vmap-fused") if v in result["rows"][0]]

    def cell(row, v):
        lo, hi = row[v]["range_ms"]
        return f"{row[v]['ms_per_step']:.2f} ({lo:.2f}–{hi:.2f})"

    def ratio(q):
        return f"{q['median']:.2f}× ({q['range'][0]:.2f}–{q['range'][1]:.2f})"

    lines = ["| optimizer | K | mlplab ms/step | " + " | ".join(
        f"{v} ms/step | {v} / mlplab" for v in variants[1:]) + " |",
        "|" + "---|" * (2 + 2 * len(variants) - 1)]
    for row in result["rows"]:
        lines.append(f"| {row['optimizer']} | {row['k']} | {cell(row, 'mlplab')} | " + " | ".join(
            f"{cell(row, v)} | {ratio(row[f'{v}_over_mlplab'])}" for v in variants[1:]) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ks", default="1,8,32")
    p.add_argument("--opts", default="sgd,adam")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="steps per block")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--fused", action="store_true",
                   help="also time the idiom with torch.optim's fused=True kernels")
    p.add_argument("--out", default="bench/results/vmap-cpu.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    ks = [int(k) for k in args.ks.split(",")]
    opts = args.opts.split(",")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (8192, 784), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (8192,), generator=g)
    diff = check_same_step(x, y, torch.randint(0, 8192, (2, args.batch), generator=g))
    print(f"one SGD step from the same weights, K = 2: largest weight difference {diff:.2e}")
    assert diff < 1e-5, diff
    variants = ["mlplab", "vmap"] + (["vmap-fused"] if args.fused else [])
    times: dict[tuple, list[float]] = {}  # (opt, k, variant) -> one time per round
    ratios: dict[tuple, list[float]] = {}  # (opt, k, variant) -> its / mlplab's, per round
    for r in range(args.rounds):
        for k in ks:
            idxs = [torch.randint(0, 8192, (k, args.batch), generator=g)
                    for _ in range(args.steps)]
            for opt in opts:
                steps = {v: (mlplab_variant(opt, k, x, y)[0] if v == "mlplab" else
                             vmap_variant(opt, k, x, y, fused=v == "vmap-fused")[0])
                         for v in variants}
                for step in steps.values():  # warm-up
                    step(idxs[0])
                    step(idxs[1])
                blocks: dict[str, list[float]] = {v: [] for v in variants}
                for b in range(args.blocks):
                    for v in (variants if (r + b) % 2 == 0 else variants[::-1]):
                        blocks[v].append(time_block(steps[v], idxs))
                for v in variants:
                    times.setdefault((opt, k, v), []).append(min(blocks[v]))
                    ratios.setdefault((opt, k, v), []).append(
                        min(blocks[v]) / min(blocks["mlplab"]))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    rows = []
    for opt in opts:
        for k in ks:
            row = {"optimizer": opt, "k": k}
            for v in variants:
                ts = times[(opt, k, v)]
                row[v] = {"ms_per_step": statistics.median(ts) * 1e3,
                          "range_ms": [min(ts) * 1e3, max(ts) * 1e3]}
            for v in variants[1:]:
                rs = ratios[(opt, k, v)]
                row[f"{v}_over_mlplab"] = {"median": statistics.median(rs),
                                           "range": [min(rs), max(rs)]}
            rows.append(row)
    result = {
        "command": "python bench/vmap.py " + " ".join(
            f"--{a.replace('_', '-')} {v}" if not isinstance(v, bool) else f"--{a}"
            for a, v in vars(args).items() if v is not False),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "architecture": ARCH, "batch": args.batch, "rounds": args.rounds, "blocks": args.blocks,
        "steps_per_block": args.steps, "load_average": os.getloadavg(),
        "check_sgd_step_max_abs_diff": diff, "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))

if __name__ == "__main__":
    main()
