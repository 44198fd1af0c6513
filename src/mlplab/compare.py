"""The comparison table: runs grouped into configurations (every config field but the seed),
mean +- std and n over seeds, ranked by mean validation accuracy (never by test accuracy), each
tested against the best with Welch's t-test (p >= ALPHA: "not distinguishable from the best with
these seeds"); and its text forms for the terminal, HTML and Markdown. Diverged and chance-level
runs are counted and shown but never enter the means or the ranking.
"""

from __future__ import annotations

import json
import re
from html import escape

from markupsafe import Markup

from .bn_honest import THRESHOLD
from .bn_honest import warning as bn_warning
from .config import SCALED_INITIALIZERS
from .safetext import markdown, printable
from .search import config_key
from .stats import mean_std, welch

ALPHA = 0.05
METRICS = ("val_loss", "val_acc", "test_loss", "test_acc", "train_seconds", "epochs_run")
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


def comparison(rows: list[dict]) -> list[dict]:
    """One entry per configuration: n, diverged, mean/std of METRICS over the finished runs, rank,
    p-value against the best, and a marker ('best', '≈', '', 'n/a'). A configuration is every
    config field but the seed, so runs that share a name but not their settings (the same suite
    run again with other --epochs) are never averaged together; their names are made unique by
    the fields that differ."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        cfg = json.loads(r.get("config") or "{}")
        key = config_key(cfg) if cfg else r["experiment"]
        groups.setdefault(key, []).append(r)
    table = []
    for rs in groups.values():
        pruned = [r for r in rs if r["status"] == "pruned"]
        # a pruned configuration shows its seeds where they stopped (finished ones included:
        # an early-stopped seed); it is never ranked against configurations that went on
        ok = [r for r in rs if r["status"] == "finished" or (pruned and r["status"] == "pruned")]
        cfg = json.loads(rs[0].get("config") or "{}")
        entry = {"experiment": rs[0]["experiment"], "architecture": rs[0]["architecture"],
                 "config": {k: v for k, v in cfg.items() if k not in ("name", "seed")},
                 "params": int(rs[0]["params"]), "n": len(ok), "runs": len(rs),
                 "diverged": sum(r["status"] == "diverged" for r in rs),
                 "chance": sum(r["status"] == "chance" for r in rs), "ranked": bool(ok) and not pruned,
                 "pruned_at": max((int(r["epochs_run"]) for r in pruned), default=None),
                 "val_accs": [float(r["val_acc"]) for r in ok],
                 "run_ids": [r["run_id"] for r in rs], "bn_warning": _bn_warning(ok or rs)}
        for key in METRICS:
            entry[key], entry[f"{key}_std"] = mean_std([r[key] for r in ok])
        table.append(entry)
    _unique_names(table)
    ranked = sorted((e for e in table if e["ranked"]), key=lambda e: -e["val_acc"])
    for i, e in enumerate(ranked):
        e["rank"] = i + 1
    for e in table:
        e.setdefault("rank", None)
        e["p"] = None
        e["marker"] = f"pruned at epoch {e['pruned_at']}" if e["pruned_at"] else ""
    if ranked:
        best = ranked[0]
        best["marker"] = "best"
        for e in ranked[1:]:
            p = welch(best["val_accs"], e["val_accs"])
            e["p"] = None if p != p else p
            e["marker"] = "n/a" if e["p"] is None else ("≈" if p >= ALPHA else "")
    # the pruned after the ranked: the furthest first, then by validation accuracy
    unranked = sorted((e for e in table if not e["ranked"]),
                      key=lambda e: (-(e["pruned_at"] or 0), -(e["val_acc"] if e["n"] else -1.0)))
    return ranked + unranked


def _bn_warning(rows: list[dict]) -> str | None:
    """The configuration's BatchNorm warning: that of its run whose moving statistics saw the
    fewest updates (seeds differ only where early stopping does), or None."""
    runs = [(json.loads(r.get("config") or "{}"), json.loads(r.get("metrics") or "{}")) for r in rows]
    runs.sort(key=lambda cm: cm[1].get("bn_updates") or 0)
    return next((w for w in (bn_warning(c, m) for c, m in runs) if w), None)


def _unique_names(table: list[dict]) -> None:
    """Entries that share a name get the fields that tell them apart: 'm (epochs=3)'."""
    by_name: dict[str, list[dict]] = {}
    for e in table:
        by_name.setdefault(e["experiment"], []).append(e)
    for same in by_name.values():
        if len(same) > 1:
            keys = differing(same) or ["architecture"]
            for e in same:
                e["experiment"] += " (" + ", ".join(f"{k}={_value(e['config'].get(k))}" for k in keys) + ")"


def differing(table: list[dict]) -> list[str]:
    """The config keys whose values differ between the table's configurations (the seed and the
    architecture, which has its own column, aside)."""
    if len(table) < 2:
        return []
    keys = [k for k in table[0]["config"] if k != "architecture"]
    keys = [k for k in keys if len({json.dumps(e["config"].get(k)) for e in table}) > 1]
    # one meaning, two spellings (config synonyms): show one. batch_norm / bn_position say it all
    # until a LayerNorm appears; then norm / norm_position do
    layer = any(e["config"].get("norm") == "layer" for e in table)
    hidden = ("batch_norm", "bn_position") if layer else ("norm", "norm_position")
    return [k for k in keys if k not in hidden]


def settings_text(entry: dict, keys: list[str]) -> str:
    """'dropout=0.5, lr=0.01': the differing settings not already spelled out in the name."""
    shown = entry["experiment"].partition("[")[2]
    cfg = entry["config"]
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


def table_rows(table: list[dict]) -> list[dict]:
    """Display strings for one comparison table (shared by the terminal, HTML and Markdown)."""
    out, keys = [], differing(table)
    for e in table:
        n = e["n"]
        warn = " ⚠" if e.get("bn_warning") else ""  # next to the numbers it makes doubtful
        out.append({
            # names are data: printable on a terminal (no control characters), escaped by each form
            "rank": str(e["rank"] or "–"), "experiment": printable(e["experiment"]),
            "architecture": printable(e["architecture"]), "settings": printable(settings_text(e, keys)),
            "params": f"{e['params']:,}",
            "n": n_text(e),
            "epochs": "—" if not n else f"{e['epochs_run']:.0f}",
            "val_acc": fmt(e["val_acc"], e["val_acc_std"], n) + (warn if n else ""),
            "val_loss": fmt(e["val_loss"], e["val_loss_std"], n),
            "test_acc": fmt(e["test_acc"], e["test_acc_std"], n) + (warn if n else ""),
            "test_loss": fmt(e["test_loss"], e["test_loss_std"], n),
            "seconds": "—" if not n else f"{e['train_seconds']:.{0 if e['train_seconds'] >= 10 else 1}f}",
            "vs_best": e["marker"] + (_p_text(e["p"]) if e["p"] is not None else ""),
            "bn_note": printable(f"⚠ {e['experiment']}: {e['bn_warning']}") if warn else "",
        })
    return out


def n_text(e: dict) -> str:
    """'3', or '1 of 3 (1 diverged, 1 at chance)' when not every seed counts."""
    if e["n"] == e["runs"]:
        return str(e["n"])
    why = [f"{e[k]} {w}" for k, w in (("diverged", "diverged"), ("chance", "at chance")) if e.get(k)]
    return f"{e['n']} of {e['runs']}" + (f" ({', '.join(why)})" if why else "")


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


def html_table(table: list[dict], caption: str = "") -> str:
    """The comparison table as HTML (the report's, and what Jupyter shows for a Results)."""
    rows = table_rows(table)
    cols = [(k, t) for k, t in COLUMNS if k != "settings" or any(r["settings"] for r in rows)]
    head = "".join(f'<th class="{"l" if k in TEXT_COLUMNS else ""}">{escape(t)}</th>' for k, t in cols)
    body = []
    for e, row in zip(table, rows, strict=True):
        cls = "best" if e["marker"] == "best" else "tie" if e["marker"] == "≈" else (
            "" if e["ranked"] else "unranked")
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
