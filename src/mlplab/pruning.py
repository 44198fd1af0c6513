"""The decision at a rung of successive halving: which configurations go on. Pure functions of
the members' histories (no torch, no clock, no arrival order), so in-process, Dask and a resumed
run decide the same.

Two rules (`[search] rule`):

- "top": the best ceil(n / eta) by the mean of the metric over seeds (Jamieson & Talwalkar 2016).
- "noise" (the default): the same best ceil(n / eta), and every other configuration that is not
  significantly worse than the last of them. Seed noise at a rung is estimated once from every
  configuration's seeds there (a pooled standard deviation: three seeds alone give a test little
  power), and a configuration stays when its mean is less than t(alpha, df) x sd x
  sqrt(1/n_c + 1/n_k) below the k-th best's mean (a one-sided t-test at level alpha). Early,
  while the seeds still scatter, this keeps many; later it keeps few. At the first rung it also
  keeps the best configuration with each value of each setting that varies (dropout 0.5, the
  lowest learning rate, …), so that no choice is ruled out on one epoch of evidence: a slow
  starter's choice stays in the race until the next rung. bench/search_replay.py measured both.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field

from .stats import t_two_sided_p

METRICS = {"val_acc": True, "val_loss": False}  # name -> higher is better


@dataclass(frozen=True)
class Decision:
    """One decision: kept and pruned configuration keys, best first. The first `best` kept are
    the best ceil(n / eta); `within_noise` were kept for being within noise of the last of those
    (margin: how far below it still counts, in the metric's units; sd: the pooled seed sd);
    `choices` (key -> 'lr=0.0003') for being the best with a value of a setting."""

    epoch: int
    kept: list[str]
    pruned: list[str]
    best: int
    sd: float | None = None
    margin: float | None = None
    means: dict[str, float] = field(default_factory=dict)
    note: str = ""  # why no noise estimate was made, when the rule asked for one
    within_noise: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)

    def why(self) -> str:
        """'kept 6 of 12 at epoch 1: the best 2, 3 within noise of the 2nd (…), and 1 as the
        best with dropout=0.5'."""
        n, k, extra = len(self.kept) + len(self.pruned), self.best, len(self.within_noise)
        parts = [f"the best {k}"]
        if self.sd is not None:
            parts.append(f"{extra} within noise of the {_ordinal(k)} (seed sd {self.sd:.4f}, pooled; "
                         f"margin {self.margin:.4f})")
        elif self.note:
            parts[0] += f" ({self.note})"
        if self.choices:
            parts.append(f"{len(self.choices)} as the best with "
                         + " / ".join(self.choices[c] for c in self.kept if c in self.choices))
        text = ", ".join(parts[:-1]) + ", and " + parts[-1] if len(parts) > 1 else parts[0]
        return f"kept {len(self.kept)} of {n} at epoch {self.epoch}: {text}"


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def rungs(max_epochs: int, min_epochs: int, eta: int) -> list[int]:
    """The rung epochs min_epochs * eta^i below the longest run's epochs."""
    out, e = [], min_epochs
    while e < max_epochs:
        out.append(e)
        e *= eta
    return out


def seed_score(history: list[dict], status: str, epoch: int, metric: str) -> float:
    """A seed's metric at the rung `epoch` (its last epoch, if it stopped before), worst when it
    diverged or is not finite: a diverged seed pulls its configuration to the bottom."""
    worst = -math.inf if METRICS[metric] else math.inf
    if not history or (status == "diverged" and len(history) <= epoch):
        return worst
    v = float(history[min(epoch, len(history)) - 1][metric])
    return v if math.isfinite(v) else worst


def running_at(history: list[dict], status: str, epoch: int) -> bool:
    """Was this seed still training when it reached `epoch`? (It went past it, or it was paused
    or pruned there.)"""
    return len(history) > epoch or (len(history) == epoch and status in ("running", "pruned"))


@functools.lru_cache(maxsize=256)
def t_critical(alpha: float, df: float) -> float:
    """t with P(T > t) = alpha for Student's t with df degrees of freedom (bisection on the
    exact p-value; deterministic)."""
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, df) / 2 > alpha:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_two_sided_p(mid, df) / 2 > alpha else (lo, mid)
    return hi


def pooled_sd(scores: dict[str, list[float]]) -> tuple[float, int] | None:
    """The seed standard deviation pooled over configurations (finite scores, >= 2 seeds), and
    its degrees of freedom; None when no configuration has two seeds."""
    ss, df = 0.0, 0
    for values in scores.values():
        v = [x for x in values if math.isfinite(x)]
        if len(v) >= 2:
            m = math.fsum(v) / len(v)
            ss += math.fsum((x - m) ** 2 for x in v)
            df += len(v) - 1
    return (math.sqrt(ss / df), df) if df else None


def decide(epoch: int, seeds: dict[str, list[tuple[list[dict], str]]], epochs: dict[str, int],
           eta: int, metric: str, rule: str = "top", alpha: float = 0.05, first: bool = False) -> Decision:
    """The rung at `epoch`.

    seeds: configuration key (suite order) -> (history, status) of each of its seeds; epochs: its
    planned epochs. Contenders are the configurations that go on past this rung (planned epochs
    beyond it, a seed still training at it); they are ranked by the mean over their seeds of the
    metric at the rung, ties broken by suite order; the best ceil(n / eta) are kept, and with
    rule "noise" every other one not significantly worse than the last of them and, at the
    first rung, the best with each value of each setting that varies (see above)."""
    contenders = [k for k, runs in seeds.items()
                  if epochs[k] > epoch and any(running_at(h, s, epoch) for h, s in runs)]
    sign = 1.0 if METRICS[metric] else -1.0  # scores: higher is better
    scores = {k: [sign * seed_score(h, s, epoch, metric) for h, s in seeds[k]] for k in contenders}
    means = {k: math.fsum(v) / len(v) for k, v in scores.items()}
    order = sorted(contenders, key=lambda k: (-means[k], contenders.index(k)))
    n_keep = math.ceil(len(order) / eta)
    shown = {k: sign * means[k] for k in order}
    if rule == "top" or not order:
        return Decision(epoch, order[:n_keep], order[n_keep:], n_keep, means=shown)
    within, sd, margin, note = _within_noise(order, n_keep, scores, means, alpha)
    kept = set(order[:n_keep]) | set(within)
    choices = {}
    if first:
        for label, group in choice_groups(order).items():
            best = next((k for k in order if k in group and math.isfinite(means[k])), None)
            if best is not None and best not in kept:
                choices[best] = f"{choices[best]}, {label}" if best in choices else label
    kept |= set(choices)
    return Decision(epoch, [k for k in order if k in kept], [k for k in order if k not in kept], n_keep,
                sd, margin, shown, note, within, choices)


def _within_noise(order: list[str], n_keep: int, scores: dict[str, list[float]],
                  means: dict[str, float], alpha: float):
    """(keys within noise of the k-th best, pooled sd, the k-th's margin, note)."""
    pooled = pooled_sd(scores)
    if pooled is None:
        return [], None, None, "one seed per configuration: no noise estimate"
    sd, df = pooled
    kth = order[n_keep - 1]
    t = t_critical(alpha, df)

    def margin(k: str) -> float:
        return t * sd * math.sqrt(1 / len(scores[k]) + 1 / len(scores[kth]))

    within = [k for k in order[n_keep:]
              if math.isfinite(means[kth]) and means[k] >= means[kth] - margin(k)]
    return within, sd, margin(kth), ""


BINS = 3  # a numeric setting with more distinct values than this is cut into thirds by rank


def choice_groups(keys: list[str]) -> dict[str, set[str]]:
    """'lr=0.0003' -> the configurations with that value (two or more), for every setting (but
    the name) whose value differs between them; a numeric setting with many values (random
    search) in thirds by rank ('lr 0.0001-0.0004'). Keys are the configurations' settings as
    JSON (config_key); other keys have no settings to group by. Settings that split the
    configurations the same way (batch_norm and its synonym norm) count once."""
    try:
        settings = {k: json.loads(k) for k in keys}
    except ValueError:
        return {}
    if not all(isinstance(v, dict) for v in settings.values()):
        return {}
    groups: dict[str, set[str]] = {}
    seen: set[frozenset] = set()
    for name in sorted({f for v in settings.values() for f in v} - {"name"}):
        values = {k: v.get(name) for k, v in settings.items()}
        by_value = _split(name, values)
        split = frozenset(frozenset(g) for g in by_value.values())
        if len(by_value) < 2 or split in seen:
            continue
        seen.add(split)
        # a value that one configuration alone has (a grid over lr only) is that configuration,
        # not a choice shared by several: protecting it would keep everything
        groups.update({label: g for label, g in by_value.items() if len(g) >= 2})
    return groups


def _split(name: str, values: dict[str, object]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values.values())
    distinct = sorted(set(values.values())) if numeric else []
    for k, v in values.items():
        if len(distinct) > BINS:
            third = min(BINS - 1, BINS * distinct.index(v) // len(distinct))
            part = [d for d in distinct if min(BINS - 1, BINS * distinct.index(d) // len(distinct)) == third]
            label = f"{name} {part[0]:g}-{part[-1]:g}"
        else:
            label = f"{name}={json.dumps(v) if not isinstance(v, str) else v}"
        out.setdefault(label, set()).add(k)
    return out
