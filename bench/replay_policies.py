"""Search policies replayed on stored learning curves (bench/search_replay.py).

A policy sees an instance V: array [configurations, seeds, epochs] of the metric, higher better,
a random generator and the configurations' keys (their settings as JSON, as mlplab keys them),
and returns (epochs trained per configuration, the configurations trained to the last epoch).
All seeds of a configuration are trained and pruned together, as mlplab does, so a fraction of
model-epochs is sum(epochs) / (configurations x last epoch).

mlplab's own rules are replayed through `mlplab.pruning.decide` itself (the code a run uses);
the others are written here: Hyperband's brackets on a fixed pool of configurations, and the
one-epoch baseline (Egele et al. 2024: every configuration b epochs, then the top k to the end).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from mlplab import search
from mlplab.pruning import decide

Policy = Callable[[np.ndarray, np.random.Generator, list[str]], tuple[np.ndarray, list[int]]]


def _histories(V: np.ndarray, idx: list[int], epoch: int, keys: list[str]) -> dict[str, list]:
    """mlplab's view of a rung: configuration key -> (history, status) of each seed."""
    return {keys[i]: [([{"val_acc": float(v)} for v in V[i, s, :epoch]], "running")
                      for s in range(V.shape[1])] for i in idx}


def halving(spec: search.SearchSpec, choices: bool = True) -> Policy:
    """mlplab's successive halving with this [search] spec, decided by pruning.decide (choices:
    False replays rule "noise" without its first-rung keep of each setting's best)."""

    def run(V: np.ndarray, rng: np.random.Generator, keys: list[str]) -> tuple[np.ndarray, list[int]]:
        return _rungs(V, list(range(len(V))), spec, keys if choices else [str(i) for i in range(len(V))])

    return run


def _rungs(V: np.ndarray, pool: list[int], spec: search.SearchSpec,
           keys: list[str]) -> tuple[np.ndarray, list[int]]:
    E = V.shape[2]
    epochs = np.zeros(len(V), dtype=int)
    alive = list(pool)
    index = {k: i for i, k in enumerate(keys)}
    ladder = search.rungs(E, spec.min_epochs, spec.eta)
    for r in ladder:
        seeds = _histories(V, alive, r, keys)
        kept = decide(r, seeds, dict.fromkeys(seeds, E), spec.eta, spec.metric, spec.rule, spec.alpha,
                      first=r == ladder[0]).kept
        for i in alive:
            epochs[i] = r
        alive = sorted(index[k] for k in kept)  # suite order, as the driver keeps it
    epochs[alive] = E
    return epochs, alive


def hyperband(eta: int, spec_rule: str = "top") -> Policy:
    """Hyperband (Li et al. 2018) on a fixed pool: brackets s = s_max..0, bracket s starts at
    E / eta^s epochs with a share of the configurations proportional to ceil((s_max+1)/(s+1) eta^s)
    (the paper's n_s); each bracket is successive halving; configurations are dealt to brackets
    at random (per instance)."""

    def run(V: np.ndarray, rng: np.random.Generator, keys: list[str]) -> tuple[np.ndarray, list[int]]:
        n, E = len(V), V.shape[2]
        s_max = int(math.floor(math.log(E) / math.log(eta) + 1e-9))
        weights = np.array([math.ceil((s_max + 1) / (s + 1) * eta ** s) for s in range(s_max, -1, -1)])
        sizes = np.floor(weights / weights.sum() * n).astype(int)
        sizes[np.argsort(-weights, kind="stable")[: n - sizes.sum()]] += 1  # the rest, largest first
        order = rng.permutation(n)
        epochs = np.zeros(n, dtype=int)
        finishers: list[int] = []
        start = 0
        for s, size in zip(range(s_max, -1, -1), sizes, strict=True):
            pool = sorted(int(i) for i in order[start:start + size])
            start += size
            if not pool:
                continue
            first = max(1, round(E / eta ** s))
            spec = search.SearchSpec(method="halving", eta=eta, min_epochs=min(first, E), rule=spec_rule)
            e, alive = _rungs(V, pool, spec, keys)
            epochs[pool] = e[pool]
            finishers += alive
        return epochs, sorted(finishers)

    return run


def first_epochs(b: int, k: int) -> Policy:
    """Every configuration b epochs, then the k best (mean over seeds at epoch b) to the end."""

    def run(V: np.ndarray, rng: np.random.Generator, keys: list[str]) -> tuple[np.ndarray, list[int]]:
        n, E = len(V), V.shape[2]
        mean = V[:, :, b - 1].mean(1)
        top = sorted(int(i) for i in np.argsort(-mean, kind="stable")[:k])
        epochs = np.full(n, b)
        epochs[top] = E
        return epochs, top

    return run


def first_epochs_at(b: int, fraction: float, n: int, E: int) -> int:
    """The k of first_epochs(b, k) that spends about `fraction` of a full grid of n x E."""
    return max(1, min(n, int(round((fraction * n * E - n * b) / (E - b)))))


_D = search.SearchSpec(method="halving")  # mlplab's defaults
DEFAULT = f"noise: eta {_D.eta}, first rung {_D.min_epochs}, alpha {_D.alpha}"
TODAY = "SH top: eta 3, first rung 1"  # the default before the replay


def _spec(rule: str, min_epochs: int, eta: int = 3, alpha: float = 0.05) -> search.SearchSpec:
    return search.SearchSpec(method="halving", rule=rule, min_epochs=min_epochs, eta=eta, alpha=alpha)


def policies(E: int, n: int) -> dict[str, Policy]:
    """Every policy replayed, by name (its family is the name up to ':')."""
    out: dict[str, Policy] = {}
    for eta in (2, 3, 4):
        for r1 in (1, 2, 3, 5):
            if r1 < E:
                out[f"SH top: eta {eta}, first rung {r1}"] = halving(_spec("top", r1, eta))
    for eta in (2, 3, 4):
        out[f"Hyperband: eta {eta}"] = hyperband(eta)
    for b in (1, 2, 3):
        for k in sorted({1, 2, 3, 4, 5, 6, 8, n // 2}):
            out[f"first {b} then top k: b {b}, k {k}"] = first_epochs(b, k)
    for eta, alphas in ((3, (0.1, 0.05, 0.01)), (_D.eta, ALPHAS)):
        for alpha in alphas:
            out[f"noise: eta {eta}, first rung 1, alpha {alpha}"] = halving(_spec("noise", 1, eta, alpha))
    for alpha in (0.1, 0.05, 0.02, 0.01, 0.002):
        out[f"noise without choices: eta {_D.eta}, first rung 1, alpha {alpha}"] = halving(
            _spec("noise", 1, _D.eta, alpha), choices=False)
    out[DEFAULT] = halving(_D)
    return out


# the default rule's compute/safety knob, swept
ALPHAS = (0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.0005, 1e-4, 1e-5)


def curve(name: str) -> str:
    """The prefix shared by a noise policy and its alpha sweep ('noise: eta 6, first rung 1,')."""
    return name.rsplit(" alpha", 1)[0]


def family(name: str) -> str:
    return name.split(":")[0]
