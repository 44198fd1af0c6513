"""Comparison tables and the report, built from the run store only (so old results re-report).

Configurations are compared over seeds: mean +- std and n, ranked by mean validation accuracy
(never by test accuracy), and each is tested against the best with Welch's t-test: p >= ALPHA
means "not distinguishable from the best with these seeds". Diverged runs are counted and shown
but never enter the means or the ranking.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from html import escape
from importlib import resources
from pathlib import Path

import jinja2
from markupsafe import Markup

from . import data as data_mod
from . import plots, store
from .errors import UserError
from .stats import mean_std, welch

ALPHA = 0.05
METRICS = ("val_loss", "val_acc", "test_loss", "test_acc", "train_seconds", "epochs_run")
FOOTER = (f"Ranked by mean validation accuracy over seeds; ± is the standard deviation over seeds. "
          f"≈ marks configurations not distinguishable from the best (Welch's t-test on "
          f"validation accuracy, two-sided, p ≥ {ALPHA}); n/a: fewer than 2 seeds, no test "
          f"possible. n counts the seeds in the means: runs that diverged (non-finite loss) or "
          f"ended at chance level (accuracy ≤ 15% with loss near ln 10) are counted but never "
          f"averaged or ranked. Train s: wall time of the fused group the run trained in.")


def comparison(rows: list[dict]) -> list[dict]:
    """One entry per configuration (experiment name): n, diverged, mean/std of METRICS over the
    finished runs, rank, p-value against the best, and a marker ('best', '≈', '', 'n/a')."""
    by_exp: dict[str, list[dict]] = {}
    for r in rows:
        by_exp.setdefault(r["experiment"], []).append(r)
    table = []
    for name, rs in by_exp.items():
        ok = [r for r in rs if r["status"] == "finished"]
        cfg = json.loads(rs[0].get("config") or "{}")
        entry = {"experiment": name, "architecture": rs[0]["architecture"],
                 "config": {k: v for k, v in cfg.items() if k not in ("name", "seed")},
                 "params": int(rs[0]["params"]), "n": len(ok), "runs": len(rs),
                 "diverged": sum(r["status"] == "diverged" for r in rs),
                 "chance": sum(r["status"] == "chance" for r in rs), "ranked": bool(ok),
                 "val_accs": [float(r["val_acc"]) for r in ok],
                 "run_ids": [r["run_id"] for r in rs]}
        for key in METRICS:
            entry[key], entry[f"{key}_std"] = mean_std([r[key] for r in ok])
        table.append(entry)
    ranked = sorted((e for e in table if e["ranked"]), key=lambda e: -e["val_acc"])
    for i, e in enumerate(ranked):
        e["rank"] = i + 1
    for e in table:
        e.setdefault("rank", None)
        e["p"], e["marker"] = None, ""
    if ranked:
        best = ranked[0]
        best["marker"] = "best"
        for e in ranked[1:]:
            p = welch(best["val_accs"], e["val_accs"])
            e["p"] = None if p != p else p
            e["marker"] = "n/a" if e["p"] is None else ("≈" if p >= ALPHA else "")
    return ranked + [e for e in table if not e["ranked"]]


def differing(table: list[dict]) -> list[str]:
    """The config keys whose values differ between the table's configurations (the seed and the
    architecture, which has its own column, aside)."""
    if len(table) < 2:
        return []
    keys = [k for k in table[0]["config"] if k != "architecture"]
    return [k for k in keys if len({json.dumps(e["config"].get(k)) for e in table}) > 1]


def settings_text(entry: dict, keys: list[str]) -> str:
    """'dropout=0.5, lr=0.01': the differing settings not already spelled out in the name."""
    shown = entry["experiment"].partition("[")[2]
    return ", ".join(f"{k}={_value(entry['config'].get(k))}" for k in keys if f"{k}=" not in shown)


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
        out.append({
            "rank": str(e["rank"] or "–"), "experiment": e["experiment"],
            "architecture": e["architecture"], "settings": settings_text(e, keys),
            "params": f"{e['params']:,}",
            "n": n_text(e),
            "epochs": "—" if not n else f"{e['epochs_run']:.0f}",
            "val_acc": fmt(e["val_acc"], e["val_acc_std"], n),
            "val_loss": fmt(e["val_loss"], e["val_loss_std"], n),
            "test_acc": fmt(e["test_acc"], e["test_acc_std"], n),
            "test_loss": fmt(e["test_loss"], e["test_loss_std"], n),
            "seconds": "—" if not n else f"{e['train_seconds']:.{0 if e['train_seconds'] >= 10 else 1}f}",
            "vs_best": e["marker"] + (_p_text(e["p"]) if e["p"] is not None else ""),
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
    return (f'<div class="mlplab-table" style="overflow-x:auto"><table class="comparison">{cap}'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f'<p class="foot" style="font-size:smaller">{escape(FOOTER)}</p></div>')


def _classes(rows: list[dict]) -> tuple[str, ...]:
    name = json.loads(rows[0]["config"])["dataset"]
    spec = data_mod.DATASETS.get(name)
    n = len(json.loads(rows[0]["metrics"])["per_class_acc"])
    return spec.classes if spec else tuple(str(i) for i in range(n))


def build(out: Path, run_ids: list[str] | None = None) -> dict:
    """Everything the report shows, as data and figures (bytes), from the store only."""
    rows, histories = store.snapshot(out, run_ids)
    if not rows:
        raise UserError(f"{out}: the store has no finished runs yet")
    table = comparison(rows)
    by_exp = {e["experiment"]: [histories[i] for i in e["run_ids"] if histories[i]] for e in table}
    by_exp = {k: v for k, v in by_exp.items() if v}
    # figs: section -> [(name, caption that adds to the section title, PNG bytes)]
    figs: dict[str, list[tuple[str, str, bytes]]] = {}
    seeds = sorted({len(v) for v in by_exp.values()})
    if by_exp:
        figs["curves"] = [("learning curves", (
            f"{len(by_exp)} configurations, {'/'.join(map(str, seeds))} seeds each: mean curve, "
            "the band spans the seeds. Blue: training, orange: validation. Every loss panel shares "
            "one scale, every accuracy panel another."), plots.png(plots.curves_grid(by_exp)))]
    families: dict[str, dict] = {}
    for name, hs in by_exp.items():
        families.setdefault(name.split("[")[0], {})[name] = hs
    overlays = [(fam, f"{fam}: the grid's configurations side by side (validation loss)",
                 plots.png(plots.overlay_plot(f"{fam}: validation loss", members)))
                for fam, members in families.items() if len(members) > 1]
    if len(by_exp) > 1 and len(families) > 1:
        overlays.append(("all", "every configuration's mean validation loss",
                         plots.png(plots.overlay_plot("validation loss", by_exp))))
    if overlays:
        figs["overlays"] = overlays
    figs["params"] = [("accuracy vs parameters", "test accuracy, mean ± std over seeds; points "
                       "numbered by rank on validation accuracy", plots.png(plots.params_plot(table)))]
    best_run = _best_run(table, rows)
    if best_run:
        metrics = json.loads(best_run["metrics"])
        title = f"{best_run['experiment']}, seed {best_run['seed']}"
        n_test = sum(map(sum, metrics["confusion_matrix"]))
        figs["confusion"] = [(title, f"{title}: {n_test:,} test images, accuracy "
                              f"{best_run['test_acc']:.4f} (colour: log count)",
                              plots.png(plots.confusion_plot(metrics["confusion_matrix"],
                                                             _classes(rows), title)))]
        errors = store.run_dir(out, best_run["run_id"]) / "errors.safetensors"
        if errors.is_file():
            g = store.read_tensors(errors)
            captions = [f"{y} → {p}" for y, p in zip(g["labels"].tolist(), g["preds"].tolist(),
                                                      strict=True)]
            wrong = round((1 - best_run["test_acc"]) * n_test)
            figs["gallery"] = [(title, f"the first {len(captions)} of its {wrong} errors, "
                                "labelled true → predicted", plots.png(plots.gallery_plot(
                                    g["images"].numpy(), captions, title)))]
    for e in table:  # the first augmented configuration (in rank order): what its nets saw
        aug = [store.run_dir(out, i) / "augmented.safetensors" for i in e["run_ids"]]
        aug = [p for p in aug if p.is_file()]
        if aug:
            g = store.read_tensors(aug[0])
            figs["augmented"] = [(e["experiment"], f"{e['experiment']}: three random draws of "
                                  "the first 12 training digits", plots.png(plots.gallery_plot(
                                      g["images"].numpy(), [f"label {y}" for y in g["labels"].tolist()],
                                      e["experiment"], cols=12, color="black")))]
            break
    return {"table": table, "rows": table_rows(table), "figs": figs, "runs": len(rows),
            "devices": sorted({r["device"] or "?" for r in rows}), "best": best_run,
            "histories": by_exp}


def _best_run(table: list[dict], rows: list[dict]) -> dict | None:
    """The best configuration's run with the highest validation accuracy."""
    ranked = [e for e in table if e["ranked"]]
    if not ranked:
        return None
    ids = set(ranked[0]["run_ids"])
    cands = [r for r in rows if r["run_id"] in ids and r["status"] == "finished"]
    return max(cands, key=lambda r: r["val_acc"])


def write_report(out: str | Path, run_ids: list[str] | None = None) -> dict[str, Path]:
    """OUT/report.html (self-contained: images inline), OUT/report.md (+ OUT/report_files/),
    and OUT/plots/<experiment>.png + overlay.png."""
    out = Path(out)
    rep = build(out, run_ids)
    # The notebook's figures as plain files: train vs validation loss per experiment + overlay.
    for name, hs in rep["histories"].items():
        plots.save(plots.loss_plot(name, hs), out / "plots" / f"{plots.slug(name)}.png")
    plots.save(plots.overlay_plot("validation loss, every experiment", rep["histories"]),
               out / "plots" / "overlay.png")
    files = out / "report_files"
    for old in files.glob("*.png"):  # figures of an earlier report must not linger
        old.unlink()
    md_images: dict[str, list[tuple[str, str]]] = {}
    for section, items in rep["figs"].items():
        for i, (name, caption, data) in enumerate(items):
            path = files / f"{section}-{i:02d}-{plots.slug(name)}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            store.write_bytes_atomic(path, data)
            md_images.setdefault(section, []).append((caption, f"report_files/{path.name}"))
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(
        (resources.files("mlplab") / "templates" / "report.html.j2").read_text())
    b64 = {s: [(c, base64.b64encode(d).decode()) for _, c, d in items] for s, items in rep["figs"].items()}
    created = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    html = template.render(rep=rep, figs=b64, table_html=Markup(html_table(rep["table"])),
                           out=str(out), created=created)
    store.write_text_atomic(out / "report.html", html)
    store.write_text_atomic(out / "report.md", _markdown(rep, md_images, created))
    return {"html": out / "report.html", "md": out / "report.md"}


def markdown_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(t for _, t in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(r[k].replace("|", "\\|") for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def _markdown(rep: dict, images: dict[str, list[tuple[str, str]]], created: str) -> str:
    parts = [f"# mlplab report\n\n{rep['runs']} runs on {', '.join(rep['devices'])}, {created}.\n",
             "## Comparison\n", markdown_table(rep["rows"]), f"\n{FOOTER}\n"]
    titles = {"curves": "Learning curves", "overlays": "Overlays", "params": "Accuracy vs size",
              "confusion": "Best model: confusion matrix", "gallery": "Best model: misclassified digits",
              "augmented": "Augmentation: what the network saw"}
    for section, title in titles.items():
        if section in images:
            parts.append(f"## {title}\n")
            parts += [f"![{c}]({p})\n" for c, p in images[section]]
    return "\n".join(parts)
