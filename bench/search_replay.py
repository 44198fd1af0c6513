"""Replay search policies on a full grid's stored learning curves (bench/search_grid.py made them):
how often does a policy keep the winner, at what compute?

    python bench/search_replay.py [--grids mnist fashion-mnist] [--instances 300] [--configs 18]

An instance is a random subset of 3 seeds (shared by every configuration, as a suite's seeds are)
and of --configs configurations; its winner is the configuration with the best mean validation
accuracy at the last epoch over those seeds. For each policy and instance: the model-epochs spent
(fraction of the instance's full grid), whether the winner was trained to the end (kept), the
regret (winner's mean minus the mean of the best configuration the policy trained to the end),
and whether that one is within noise of the winner (Welch p >= 0.05 on the 3 seeds, as the
comparison table decides); and the keep-rate over the instances whose winner was a slow starter
(not in the top third after epoch 1). Writes bench/results/search-replay.{json,md,png}.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mlplab.stats import welch

RESULTS = Path(__file__).resolve().parent / "results"


def load_grid(path: Path, metric: str = "val_acc") -> tuple[list[str], np.ndarray]:
    """(configuration names in file order, array [configurations, seeds, epochs])."""
    curves: dict[str, dict[int, dict[int, float]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            curves.setdefault(row["config"], {}).setdefault(int(row["seed"]), {})[int(row["epoch"])] = \
                float(row[metric])
    names = list(curves)
    seeds = sorted(curves[names[0]])
    epochs = max(max(e) for e in curves[names[0]].values())
    V = np.array([[[curves[c][s][e] for e in range(1, epochs + 1)] for s in seeds] for c in names])
    return names, V


METRIC_COLUMNS = ("config", "seed", "epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def grid_keys(path: Path) -> list[str]:
    """Each configuration's settings as JSON (the other columns of the CSV), in file order, as
    mlplab keys a configuration; its name where the file has no settings."""
    keys: dict[str, str] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            settings = {k: _value(v) for k, v in row.items() if k not in METRIC_COLUMNS}
            keys.setdefault(row["config"], json.dumps(settings, sort_keys=True) if settings
                            else row["config"])
    return list(keys.values())


def _value(text: str):
    """A CSV cell as the JSON value it was: true/false, a number, or text."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return text


def instances(V: np.ndarray, n: int, seeds: int, configs: int, seed: int = 0):
    """n (configuration indices, seed indices) pairs, each sorted (suite order)."""
    rng = np.random.default_rng(seed)
    C, S = V.shape[:2]
    for _ in range(n):
        yield (np.sort(rng.choice(C, min(configs, C), replace=False)),
               np.sort(rng.choice(S, seeds, replace=False)))


def score(V: np.ndarray, epochs: np.ndarray, finishers: list[int]) -> dict:
    """One policy on one instance V [configurations, seeds, epochs]."""
    E = V.shape[2]
    final = V[:, :, -1].mean(1)
    winner = int(np.argmax(final))
    chosen = max(finishers, key=lambda i: (final[i], -i))
    p = 1.0 if chosen == winner else welch(list(V[winner, :, -1]), list(V[chosen, :, -1]))
    first = V[:, :, 0].mean(1)  # a slow starter: the winner was not in the top third at epoch 1
    slow = int((first > first[winner]).sum()) >= math.ceil(len(V) / 3)
    return {"fraction": float(epochs.sum() / (len(V) * E)), "kept": winner in finishers,
            "regret": float(final[winner] - final[chosen]), "within_noise": bool(p >= 0.05),
            "slow": slow}


def replay(V: np.ndarray, policies: dict[str, Callable], n: int = 300, seeds: int = 3,
           configs: int = 18, seed: int = 0, keys: list[str] | None = None) -> dict[str, dict]:
    """Per policy: mean fraction, keep-rate, mean and worst regret, within-noise rate."""
    keys = keys or [str(i) for i in range(len(V))]
    acc: dict[str, list[dict]] = {k: [] for k in policies}
    for i, (ci, si) in enumerate(instances(V, n, seeds, configs, seed)):
        sub = V[ci][:, si]
        for name, policy in policies.items():
            rng = np.random.default_rng([seed, i])  # Hyperband deals its brackets from it
            acc[name].append(score(sub, *policy(sub, rng, [keys[c] for c in ci])))
    return {name: summary(rows) for name, rows in acc.items()}


def summary(rows: list[dict]) -> dict:
    slow = [r["kept"] for r in rows if r["slow"]]
    return {"instances": len(rows),
            "fraction": round(float(np.mean([r["fraction"] for r in rows])), 4),
            "keep_rate": round(float(np.mean([r["kept"] for r in rows])), 4),
            "mean_regret": round(float(np.mean([r["regret"] for r in rows])), 6),
            "max_regret": round(float(np.max([r["regret"] for r in rows])), 6),
            "within_noise": round(float(np.mean([r["within_noise"] for r in rows])), 4),
            "slow_starter_instances": len(slow),
            "slow_starter_keep_rate": round(float(np.mean(slow)), 4) if slow else None}


def interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """A policy family's value at fraction x (linear between its two neighbouring points)."""
    pts = sorted(points)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def versus(res: dict[str, dict], default: str) -> dict[str, dict]:
    """Each other family against the default at equal compute: its best keep-rate and mean
    regret at that compute or less (envelope), interpolated at the default's fraction. A family
    that never spends that little (Hyperband) is compared at its cheapest point with the default
    rule at that compute (the default's alpha sweep, interpolated)."""
    from replay_policies import curve

    d = res[default]
    sweep = [(r["fraction"], r) for k, r in res.items() if curve(k) == curve(default)]
    fams: dict[str, list] = {}
    for r in res.values():
        fams.setdefault(r["family"], []).append(r)
    out = {}
    for fam, rs in fams.items():
        if fam == d["family"]:
            continue
        at = d["fraction"]
        other = {k: interpolate(envelope([(r["fraction"], r[k]) for r in rs], k), at) for k in KEYS}
        ours = {k: d[k] for k in KEYS}
        if other["keep_rate"] is None:
            cheapest = min(rs, key=lambda r: r["fraction"])
            at, other = cheapest["fraction"], {k: cheapest[k] for k in KEYS}
            ours = {k: interpolate([(x, r[k]) for x, r in sweep], at) for k in KEYS}
        out[fam] = {"at_fraction": round(at, 4),
                    **{f"{fam_or_ours}_{k}": None if v is None else round(v, 6)
                       for fam_or_ours, vals in (("other", other), ("default_rule", ours))
                       for k, v in vals.items()},
                    "default_rule_at_least_as_good": None if ours["keep_rate"] is None else bool(
                        ours["keep_rate"] >= other["keep_rate"] - 1e-9
                        and ours["mean_regret"] <= other["mean_regret"] + 1e-9)}
    return out


KEYS = ("keep_rate", "mean_regret")


def envelope(points: list[tuple[float, float]], key: str) -> list[tuple[float, float]]:
    """The best a family reaches at each compute or less (its Pareto front), so a family of
    several knobs (eta, first rung) is judged by its best setting, never by an average."""
    better = max if key == "keep_rate" else min
    out, best = [], None
    for x, y in sorted(points):
        best = y if best is None else better(best, y)
        out.append((x, best))
    return out


def table(res: dict[str, dict]) -> str:
    """Markdown: one row per policy, cheapest first."""
    lines = ["| policy | model-epochs | winner kept | mean regret | max regret | within noise "
             "| slow-starter winner kept |", "|---|---|---|---|---|---|---|"]
    for name, r in sorted(res.items(), key=lambda kv: kv[1]["fraction"]):
        slow = (f"{r['slow_starter_keep_rate']:.0%} of {r['slow_starter_instances']}"
                if r["slow_starter_instances"] else "—")
        lines.append(f"| {name} | {r['fraction']:.3f} | {r['keep_rate']:.1%} | {r['mean_regret']:.5f} "
                     f"| {r['max_regret']:.4f} | {r['within_noise']:.1%} | {slow} |")
    return "\n".join(lines)


def plot(out: dict, path: Path) -> None:
    """Keep-rate and mean regret against the fraction of model-epochs: a colour per family (a
    line where one knob varies), the default a star, today's former default a cross."""
    from matplotlib.figure import Figure
    from replay_policies import TODAY, curve

    grids = out["grids"]
    fig = Figure(figsize=(11, 4.2 * len(grids)), layout="constrained")
    axes = fig.subplots(len(grids), 2, squeeze=False)
    for row, (g, v) in zip(axes, grids.items(), strict=True):
        res, default = v["policies"], v["default"]["policy"]
        lines: dict[str, list] = {}
        for name, r in res.items():
            lines.setdefault(curve(name).rstrip(",") if r["family"] == "noise" else
                             name.split(", k")[0] if r["family"].startswith("first") else r["family"],
                             []).append(r)
        colors = {label: f"C{i}" for i, label in enumerate(lines)}
        for ax, key in zip(row, KEYS, strict=True):
            for label, rs in lines.items():
                rs = sorted(rs, key=lambda r: r["fraction"])
                style = "o" if rs[0]["family"] in ("SH top", "Hyperband") else "o-"
                ax.plot([r["fraction"] for r in rs], [r[key] for r in rs], style, markersize=3.5,
                        linewidth=1, color=colors[label], alpha=0.8, label=label)
            for name, marker, label in ((default, "*", f"default: {default}"),
                                        (TODAY, "X", f"before: {TODAY}")):
                ax.plot(res[name]["fraction"], res[name][key], marker, markersize=13, color="black",
                        markerfacecolor="gold" if marker == "*" else "white", label=label)
            ax.axvline(1 / 3, color="0.4", linestyle="--", linewidth=0.8)
            ax.set(xlabel="model-epochs (fraction of the full grid)", title=g)
            ax.grid(alpha=0.3)
        row[0].set_ylabel("winner kept (fraction of instances)")
        row[0].axhline(0.9, color="0.4", linestyle=":", linewidth=0.8)
        row[1].set_ylabel("mean regret (validation accuracy)")
        row[1].set_yscale("symlog", linthresh=1e-4)
        row[1].set_ylim(bottom=0)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=7)
    fig.savefig(path, dpi=90)


def main() -> None:
    from replay_policies import DEFAULT, family, policies

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", nargs="+", default=["mnist", "fashion-mnist"])
    ap.add_argument("--instances", type=int, default=300)
    ap.add_argument("--configs", type=int, default=18)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--name", default="search-replay")
    ap.add_argument("--epochs", type=int, help="replay a shorter search: the curves cut at this epoch")
    args = ap.parse_args()
    out = {"command": "python " + " ".join(sys.argv), "instances": args.instances,
           "seeds_per_instance": args.seeds, "configs_per_instance": args.configs, "grids": {}}
    for g in args.grids:
        names, V = load_grid(RESULTS / f"replay-grid-{g}.csv")
        V = V[:, :, :args.epochs] if args.epochs else V
        res = replay(V, policies(V.shape[2], args.configs), args.instances, args.seeds, args.configs,
                     keys=grid_keys(RESULTS / f"replay-grid-{g}.csv"))
        res = {k: {"family": family(k), **v} for k, v in res.items()}
        out["grids"][g] = {"configurations": len(names), "seeds": V.shape[1], "epochs": V.shape[2],
                           "default": {"policy": DEFAULT, **res[DEFAULT]},
                           "versus_at_equal_compute": versus(res, DEFAULT), "policies": res}
        print(f"\n{g}: {len(names)} configurations x {V.shape[1]} seeds x {V.shape[2]} epochs")
        print(table(res))
        print(json.dumps({"default": out["grids"][g]["default"],
                          "versus": out["grids"][g]["versus_at_equal_compute"]}, indent=1))
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=2))
    (RESULTS / f"{args.name}.md").write_text("\n\n".join(
        f"### {g}\n\n{table(v['policies'])}" for g, v in out["grids"].items()) + "\n")
    plot(out, RESULTS / f"{args.name}.png")
    print(f"-> {RESULTS / args.name}.{{json,md,png}}")


if __name__ == "__main__":
    main()
