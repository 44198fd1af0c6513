"""The comparison table: runs grouped into configurations (every config field but the seed),
mean +- std and n over seeds, ranked by mean validation accuracy (never by test accuracy), each
tested against the best with Welch's t-test (p >= ALPHA: "not distinguishable from the best with
these seeds"); and its text forms for the terminal, HTML and Markdown. Diverged and chance-level
runs are counted and shown but never enter the means or the ranking.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from html import escape

from markupsafe import Markup

from .bn_honest import THRESHOLD
from .bn_honest import warning as bn_warning
from .config import SCALED_INITIALIZERS
from .records import METRICS, Configuration, RunRecord
from .safetext import markdown, printable
from .search import config_key
from .stats import mean_std, welch

ALPHA = 0.05
__all__ = ["ALPHA", "COLUMNS", "FOOTER", "METRICS", "comparison", "differing", "html_table",
           "markdown_table", "table_rows"]
FOOTER = (f"Ranked by mean validation accuracy over seeds; ± is the standard deviation over seeds. "
          f"≈ marks configurations not distinguishable from the best (Welch's t-test on "
          f"validation accuracy, two-sided, p ≥ {ALPHA}); n/a: fewer than 2 seeds, no test "
          f"possible. n counts the seeds in the means: runs that diverged (non-finite loss) or "
          f"ended at chance level (accuracy ≤ 15% with loss near ln 10) are counted but never "
          f"averaged or ranked. Pruned (successive halving): the metrics where the configuration "
          f"stopped, never ranked against finished ones. Train s: wall time of the fused group "
          f"the run trained in. ⚠ next to a number: its BatchNorm moving statistics saw too few "
          f"updates to be trusted (their starting values still weigh over {THRESHOLD:.0%}): evaluate with "
          f"bn_eval = \"precise\", train longer, or lower bn_momentum (the note under the table, "
          f"the report and Results.table()'s bn_warning give the numbers).")


def comparison(runs: list[RunRecord]) -> list[Configuration]:
    """One Configuration per configuration: n, diverged, mean/std of METRICS over the finished
    runs, rank, p-value against the best, and a marker ('best', '≈', '', 'n/a'). A configuration
    is every config field but the seed, so runs that share a name but not their settings (the
    same suite run again with other --epochs) are never averaged together; their names are made
    unique by the fields that differ."""
    groups: dict[str, list[RunRecord]] = {}
    for r in runs:
        groups.setdefault(config_key(dict(r.settings)) if r.settings else r.experiment, []).append(r)
    table = _unique_names([_configuration(rs) for rs in groups.values()])
    ranked = sorted((e for e in table if e.ranked), key=lambda e: -e.mean["val_acc"])
    done = [replace(e, rank=i + 1, marker="best" if i == 0 else "") for i, e in enumerate(ranked)]
    for i, e in enumerate(done[1:], 1):
        p = welch(done[0].val_accs, e.val_accs)
        p = None if p != p else p
        done[i] = replace(e, p=p, marker="n/a" if p is None else ("≈" if p >= ALPHA else ""))
    # the pruned after the ranked: the furthest first, then by validation accuracy
    unranked = sorted((replace(e, marker=f"pruned at epoch {e.pruned_at}" if e.pruned_at else "")
                       for e in table if not e.ranked),
                      key=lambda e: (-(e.pruned_at or 0), -(e.mean["val_acc"] if e.n else -1.0)))
    return done + unranked


def _configuration(rs: list[RunRecord]) -> Configuration:
    pruned = [r for r in rs if r.status == "pruned"]
    # a pruned configuration shows its seeds where they stopped (finished ones included: an
    # early-stopped seed); it is never ranked against configurations that went on
    ok = [r for r in rs if r.status == "finished" or (pruned and r.status == "pruned")]
    stats = {key: mean_std([getattr(r, key) for r in ok]) for key in METRICS}
    return Configuration(
        experiment=rs[0].experiment, architecture=rs[0].architecture,
        settings={k: v for k, v in rs[0].settings.items() if k not in ("name", "seed")},
        params=int(rs[0].params), n=len(ok), runs=len(rs),
        diverged=sum(r.status == "diverged" for r in rs), chance=sum(r.status == "chance" for r in rs),
        ranked=bool(ok) and not pruned, pruned_at=max((int(r.epochs_run) for r in pruned), default=None),
        run_ids=tuple(r.run_id for r in rs), val_accs=tuple(float(r.val_acc) for r in ok),
        mean={k: m for k, (m, _) in stats.items()}, std={k: s for k, (_, s) in stats.items()},
        bn_warning=_bn_warning(ok or rs))


def _bn_warning(runs: list[RunRecord]) -> str | None:
    """The configuration's BatchNorm warning: that of its run whose moving statistics saw the
    fewest updates (seeds differ only where early stopping does), or None."""
    runs = sorted(runs, key=lambda r: r.metrics.get("bn_updates") or 0)
    return next((w for w in (bn_warning(dict(r.settings), dict(r.metrics)) for r in runs) if w), None)


def _unique_names(table: list[Configuration]) -> list[Configuration]:
    """Entries that share a name get the fields that tell them apart: 'm (epochs=3)'."""
    by_name: dict[str, list[int]] = {}
    for i, e in enumerate(table):
        by_name.setdefault(e.experiment, []).append(i)
    for same in by_name.values():
        if len(same) > 1:
            keys = differing([table[i] for i in same]) or ["architecture"]
            for i in same:
                e = table[i]
                what = ", ".join(f"{k}={_value(e.settings.get(k))}" for k in keys)
                table[i] = replace(e, experiment=f"{e.experiment} ({what})")
    return table


def differing(table: list[Configuration]) -> list[str]:
    """The config keys whose values differ between the table's configurations (the seed and the
    architecture, which has its own column, aside)."""
    if len(table) < 2:
        return []
    keys = [k for k in table[0].settings if k != "architecture"]
    keys = [k for k in keys if len({json.dumps(e.settings.get(k)) for e in table}) > 1]
    # one meaning, two spellings (config synonyms): show one. batch_norm / bn_position say it all
    # until a LayerNorm appears; then norm / norm_position do
    layer = any(e.settings.get("norm") == "layer" for e in table)
    hidden = ("batch_norm", "bn_position") if layer else ("norm", "norm_position")
    return [k for k in keys if k not in hidden]


def settings_text(entry: Configuration, keys: list[str]) -> str:
    """'dropout=0.5, lr=0.01': the differing settings not already spelled out in the name."""
    shown = entry.experiment.partition("[")[2]
    cfg = entry.settings
    # init_stddev means nothing to a configuration whose initializers take no stddev
    scaled = any(cfg.get(k) in SCALED_INITIALIZERS for k in ("init", "output_init"))
    return ", ".join(f"{k}={_value(cfg.get(k))}" for k in keys
                     if f"{k}=" not in shown and (k != "init_stddev" or scaled))


def _value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ",".join(map(str, v)) + "]"
    return "none" if v is None else str(v)


def fmt(mean: float, std: float, n: int, digits: int = 4) -> str:
    """'0.9843' for one seed, '0.9843 ± 0.0012' for several, '—' for none."""
    if n == 0 or mean != mean:
        return "—"
    return f"{mean:.{digits}f}" if n <= 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def table_rows(table: list[Configuration]) -> list[dict]:
    """Display strings for one comparison table (shared by the terminal, HTML and Markdown)."""
    out, keys = [], differing(table)
    for e in table:
        n, mean, std = e.n, e.mean, e.std
        secs = mean["train_seconds"]
        warn = " ⚠" if e.bn_warning else ""  # next to the numbers it makes doubtful
        out.append({
            # names are data: printable on a terminal (no control characters), escaped by each form
            "rank": str(e.rank or "–"), "experiment": printable(e.experiment),
            "architecture": printable(e.architecture), "settings": printable(settings_text(e, keys)),
            "params": f"{e.params:,}",
            "n": n_text(e),
            "epochs": "—" if not n else f"{mean['epochs_run']:.0f}",
            "val_acc": fmt(mean["val_acc"], std["val_acc"], n) + (warn if n else ""),
            "val_loss": fmt(mean["val_loss"], std["val_loss"], n),
            "test_acc": fmt(mean["test_acc"], std["test_acc"], n) + (warn if n else ""),
            "test_loss": fmt(mean["test_loss"], std["test_loss"], n),
            "seconds": "—" if not n else f"{secs:.{0 if secs >= 10 else 1}f}",
            "vs_best": e.marker + (_p_text(e.p) if e.p is not None else ""),
            "bn_note": printable(f"⚠ {e.experiment}: {e.bn_warning}") if warn else "",
        })
    return out


def n_text(e: Configuration) -> str:
    """'3', or '1 of 3 (1 diverged, 1 at chance)' when not every seed counts."""
    if e.n == e.runs:
        return str(e.n)
    why = [f"{n} {w}" for n, w in ((e.diverged, "diverged"), (e.chance, "at chance")) if n]
    return f"{e.n} of {e.runs}" + (f" ({', '.join(why)})" if why else "")


def _p_text(p: float) -> str:
    return " p<0.01" if p < 0.01 else f" p={p:.2f}"


COLUMNS = (("rank", "#"), ("experiment", "Model"), ("architecture", "Architecture"),
           ("settings", "Settings"), ("params", "Params"), ("n", "n"), ("epochs", "Epochs"),
           ("val_acc", "Val accuracy"),
           ("test_loss", "Test loss"), ("test_acc", "Test accuracy"), ("seconds", "Train s"),
           ("vs_best", "vs best"))


TEXT_COLUMNS = ("experiment", "architecture", "settings")


def _nowrap(text: str) -> Markup:
    """HTML that may break only after ',' or ' ' or before '[': never at a hyphen, so
    '2-hidden' and '784-512-256-10' stay whole on a narrow screen."""
    parts = [p for p in re.split(r"(?<=[, ])|(?=\[)", text) if p]
    return Markup("<wbr>").join(Markup('<span class="nw">{}</span>').format(p) for p in parts)


def html_table(table: list[Configuration], caption: str = "") -> str:
    """The comparison table as HTML (the report's, and what Jupyter shows for a Results)."""
    rows = table_rows(table)
    cols = [(k, t) for k, t in COLUMNS if k != "settings" or any(r["settings"] for r in rows)]
    head = "".join(f'<th class="{"l" if k in TEXT_COLUMNS else ""}">{escape(t)}</th>' for k, t in cols)
    body = []
    for e, row in zip(table, rows, strict=True):
        cls = "best" if e.marker == "best" else "tie" if e.marker == "≈" else (
            "" if e.ranked else "unranked")
        cells = "".join(f'<td class="l">{_nowrap(row[k])}</td>' if k in TEXT_COLUMNS
                        else f"<td>{escape(row[k])}</td>" for k, _ in cols)
        body.append(f'<tr class="{cls}">{cells}</tr>')
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    notes = "".join(f'<p class="note">{escape(r["bn_note"])}</p>' for r in rows if r["bn_note"])
    return (f'<div class="mlplab-table" style="overflow-x:auto"><table class="comparison">{cap}'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{notes}"
            f'<p class="foot" style="font-size:smaller">{escape(FOOTER)}</p></div>')


def markdown_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(t for _, t in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(markdown(r[k]) for k, _ in COLUMNS) + " |" for r in rows]
    notes = [markdown(r["bn_note"]) for r in rows if r.get("bn_note")]
    notes = ["", "\n\n".join(notes)] if notes else []  # a paragraph each
    return "\n".join([head, sep, *body, *notes])
