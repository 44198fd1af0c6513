"""The report (report.html, report.md, plots/), built from the run store only, so old results
re-report. Its table is `compare.comparison` (re-exported here)."""

from __future__ import annotations

import base64
import datetime as dt
import errno
import json
import os
from importlib import resources
from pathlib import Path

import jinja2
from markupsafe import Markup

from . import data as data_mod
from . import plots, safefs, store
from .compare import (  # noqa: F401  (re-exported: the report's table is the comparison)
    ALPHA,
    COLUMNS,
    FOOTER,
    METRICS,
    comparison,
    differing,
    html_table,
    markdown_table,
    table_rows,
)
from .errors import UserError
from .safetext import markdown, printable


def class_names(rows: list[dict]) -> tuple[str, ...]:
    """The classes' names: stored with the run (folder names, a Parquet file's names, a
    `classes` list), else the registered dataset's, else the class indices."""
    metrics = json.loads(rows[0]["metrics"])
    n = len(metrics["per_class_acc"])
    stored = metrics.get("classes")
    if isinstance(stored, list) and len(stored) == n and all(isinstance(c, str) for c in stored):
        return tuple(stored)
    spec = data_mod.DATASETS.get(json.loads(rows[0]["config"])["dataset"])
    return spec.classes if spec else tuple(str(i) for i in range(n))


def build(out: Path, run_ids: list[str] | None = None) -> dict:
    """Everything the report shows, as data and figures (bytes), from the store only."""
    rows, histories = store.snapshot(out, run_ids)
    if not rows:
        raise UserError(f"{out}: the store has no finished runs yet")
    table = comparison(rows)
    notes: list[str] = []  # what the report had to leave out, and why
    by_exp = {e["experiment"]: [histories[i] for i in e["run_ids"] if histories[i]] for e in table}
    by_exp = {k: v for k, v in by_exp.items() if v}
    # figs: section -> [(name, caption that adds to the section title, PNG bytes)]
    figs: dict[str, list[tuple[str, str, bytes]]] = {}
    search = search_log(out)
    if search or any(e["pruned_at"] for e in table):
        figs["search"] = [_search_figure(table, by_exp, search)]
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
    best = best_run(table, rows)
    if best:
        metrics = json.loads(best["metrics"])
        title = f"{best['experiment']}, seed {best['seed']}"
        n_test = sum(map(sum, metrics["confusion_matrix"]))
        figs["confusion"] = [(title, f"{title}: {n_test:,} test images, accuracy "
                              f"{best['test_acc']:.4f} (colour: log count)",
                              plots.png(plots.confusion_plot(metrics["confusion_matrix"],
                                                             class_names(rows), title)))]
        names, shape = class_names(rows), tuple(metrics.get("image_shape") or ())
        gallery = _gallery(store.run_dir(out, best["run_id"]) / "errors.safetensors", notes,
                           lambda g: [f"{names[y]} → {names[p]}" for y, p in zip(
                               g["labels"].tolist(), g["preds"].tolist(), strict=True)], shape)
        if gallery:
            images, captions = gallery
            wrong = round((1 - best["test_acc"]) * n_test)
            figs["gallery"] = [(title, f"the first {len(captions)} of its {wrong} errors, "
                                "labelled true → predicted", plots.png(plots.gallery_plot(
                                    images, captions, title, shape=shape)))]
    for e in table:  # the first augmented configuration (in rank order): what its nets saw
        aug = [store.run_dir(out, i) / "augmented.safetensors" for i in e["run_ids"]]
        aug = [p for p in aug if p.is_file()]
        gallery = aug and _gallery(aug[0], notes, lambda g: [f"label {y}" for y in g["labels"].tolist()])
        if gallery:
            figs["augmented"] = [(e["experiment"], f"{e['experiment']}: three random draws of "
                                  "the first 12 training digits", plots.png(plots.gallery_plot(
                                      *gallery, e["experiment"], cols=12, color="black")))]
            break
    return {"table": table, "rows": table_rows(table), "figs": figs, "runs": len(rows),
            "devices": sorted({r["device"] or "?" for r in rows}), "best": best,
            "histories": by_exp, "notes": notes}


GALLERY_MAX_BYTES = 16 << 20


def _gallery(path: Path, notes: list[str], captions, shape: tuple[int, ...] = ()) -> tuple | None:
    """(images [n, H*W] uint8, captions) from a stored gallery file (square images unless
    `shape` says (H, W)), or None with a note in the report when it is damaged (the rest of the
    report is made without it)."""
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > GALLERY_MAX_BYTES:  # a gallery is a few hundred small images
            raise ValueError(f"{path.stat().st_size:,} bytes, more than a gallery holds")
        g = store.read_tensors(path)
        images, labels = g["images"].numpy(), g["labels"]
        side = round(images.shape[1] ** 0.5) if images.ndim == 2 else 0
        pixels = shape[0] * shape[1] if len(shape) == 2 else side * side
        if not side or pixels != images.shape[1] or len(labels) != len(images) \
                or labels.ndim != 1 or not 0 < len(images) <= 1000:
            raise ValueError(f"images of shape {list(images.shape)}, {len(labels)} labels")
        return images, captions(g)
    except (UserError, KeyError, IndexError, ValueError, TypeError, RuntimeError) as e:
        why = str(e).removeprefix(f"{path}: ").splitlines()[0][:200] if str(e) else type(e).__name__
        notes.append(f"{path.parent.name}/{path.name} is damaged and left out ({why})")
        return None


def search_log(out: Path) -> dict | None:
    """OUT/search.json (written by a run with successive halving), or None."""
    try:
        return json.loads((out / "search.json").read_text())
    except (OSError, ValueError):
        return None


def budget_text(search: dict) -> str:
    """'228 model-epochs of the 900 a full grid would spend (25%)'."""
    spent, full = search["model_epochs"], search["full_grid_model_epochs"]
    return f"{spent:,} model-epochs of the {full:,} a full grid would spend ({spent / full:.0%})"


def _rungs(table: list[dict], search: dict | None) -> list[int]:
    """The rung epochs: from search.json, else where configurations were pruned."""
    return [r["epoch"] for r in search["rungs"]] if search else sorted(
        {e["pruned_at"] for e in table if e["pruned_at"]})


def search_figure(table: list[dict], by_exp: dict, search: dict | None):
    """The picture of a search (plots.search_plot) from the comparison and search.json; at a
    rung, a configuration kept for being within seed noise of the last of the best 1/eta gets
    an open circle, one kept as the best with a value of a setting an open square (rule
    "noise")."""
    metric = search["metric"] if search else "val_acc"
    fig = plots.search_plot(by_exp, {e["experiment"]: e["pruned_at"] for e in table},
                            _rungs(table, search), metric, search["eta"] if search else 3)
    ax = fig.axes[0]
    for field, marker, label in (("within_noise", "o", "kept within seed noise (o)"),
                                 ("choices", "s", "kept as the best with a setting's value (□)")):
        marks = []
        for r in (search or {}).get("rungs", []):
            for name in r.get(field, []):  # absent in logs of rule "top" and older runs
                mean = plots.band(by_exp[name], metric)[0] if name in by_exp else []
                if len(mean) >= r["epoch"]:
                    marks.append((r["epoch"], mean[r["epoch"] - 1]))
        if marks:
            ax.plot(*zip(*marks, strict=True), marker, markerfacecolor="none", markeredgecolor="black",
                    markersize=7, linestyle="none", label=label)
    if any(line.get_label().startswith("kept ") for line in ax.lines):
        for legend in list(fig.legends):  # the legend again, with the new entries
            legend.remove()
        fig.legend(loc="outside right upper", fontsize=7)
    return fig


def _search_figure(table: list[dict], by_exp: dict, search: dict | None) -> tuple[str, str, bytes]:
    caption = (f"successive halving: {len(by_exp)} configurations; rungs at epoch "
               f"{', '.join(map(str, _rungs(table, search)))}")
    if search:
        kept = f"the best 1/{search['eta']} went on"
        if search.get("rule", "top") == "noise":  # search.json of older versions has no rule: top
            kept += " with every one within seed noise of them (open marks)"
        caption += (f"; at each, ranked by mean {search['metric']} over seeds, {kept}; "
                    f"{budget_text(search)}")
    return ("search", caption, plots.png(search_figure(table, by_exp, search)))


def best_run(table: list[dict], rows: list[dict]) -> dict | None:
    """The best configuration's run with the highest validation accuracy."""
    ranked = [e for e in table if e["ranked"]]
    if not ranked:
        return None
    ids = set(ranked[0]["run_ids"])
    cands = [r for r in rows if r["run_id"] in ids and r["status"] == "finished"]
    return max(cands, key=lambda r: r["val_acc"])


def write_report(out: str | Path, run_ids: list[str] | None = None,
                 to: str | Path | None = None) -> dict:
    """report.html (self-contained: images inline), report.md (+ report_files/) and
    plots/<experiment>.png + overlay.png, into OUT or into `to` (a folder, created if needed:
    where OUT cannot be written, e.g. read-only media). No link inside that folder is followed.
    Returns the paths ("html", "md") and "notes": what had to be left out (a damaged file)."""
    out = Path(out)
    dest = Path(to) if to is not None else out
    if dest.is_dir():  # before any figure is drawn: a planted link, a read-only folder
        safefs.refuse_links(dest, REPORT_NAMES, ("plots", "report_files"))
        if not os.access(dest, os.W_OK):
            _unwritable(out, dest, os.strerror(errno.EROFS if _read_only(dest) else errno.EACCES))
    rep = build(out, run_ids)
    try:
        _write_files(dest, rep)
        # which state of the store the report shows (a selection of runs never passes for the whole)
        store.write_text_atomic(dest / STAMP, store_state(out) if run_ids is None else "a selection",
                                root=dest)
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        _unwritable(out, dest, e.strerror)
    return {"html": dest / "report.html", "md": dest / "report.md", "notes": rep["notes"]}


STAMP = ".report-state"  # beside the report: the state of the store it shows (`up_to_date`)
REPORT_NAMES = ("report.html", "report.md", "plots", "report_files", STAMP)


def store_state(out: Path) -> str:
    """What a report of OUT depends on, in one line: the runs committed (how many, when the last
    was) and the mlplab version that draws it. Any commit changes it."""
    from . import __version__

    db = store.read_db(out)
    try:
        n, last = db.execute("SELECT COUNT(*), MAX(finished_at) FROM runs").fetchone()
    finally:
        db.close()
    return f"{n} runs, last finished {last}, mlplab {__version__}"


def up_to_date(out: str | Path) -> bool:
    """Whether OUT's report shows its store as it is now (its stamp matches and its files are
    there): a rerun that trained nothing keeps it instead of drawing it again."""
    out = Path(out)
    try:
        stamp = (out / STAMP).read_text()
    except (OSError, UnicodeDecodeError):
        return False
    return stamp == store_state(out) and all((out / n).exists() for n in REPORT_NAMES[:4])


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _unwritable(out: Path, dest: Path, why: str):
    raise UserError(f"cannot write the report into {dest} ({why}); write it elsewhere: "
                    f"mlplab report {out} --to DIR")


def _write_files(dest: Path, rep: dict) -> None:
    # The notebook's figures as plain files: train vs validation loss per experiment + overlay.
    for name, hs in rep["histories"].items():
        store.write_bytes_atomic(dest / "plots" / f"{plots.slug(name)}.png",
                                 plots.png(plots.loss_plot(name, hs)), root=dest)
    store.write_bytes_atomic(dest / "plots" / "overlay.png", plots.png(
        plots.overlay_plot("validation loss, every experiment", rep["histories"])), root=dest)
    with safefs.folder(dest, ("report_files",)) as fd:  # an earlier report's figures must go
        for old in os.listdir(fd):
            if old.endswith(".png"):
                safefs.remove(fd, old)
    md_images: dict[str, list[tuple[str, str]]] = {}
    for section, items in rep["figs"].items():
        for i, (name, caption, data) in enumerate(items):
            path = dest / "report_files" / f"{section}-{i:02d}-{plots.slug(name)}.png"
            store.write_bytes_atomic(path, data, root=dest)
            md_images.setdefault(section, []).append((caption, f"report_files/{path.name}"))
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(
        (resources.files("mlplab") / "templates" / "report.html.j2").read_text())
    b64 = {s: [(c, base64.b64encode(d).decode()) for _, c, d in items] for s, items in rep["figs"].items()}
    created = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    html = template.render(rep=rep, figs=b64, table_html=Markup(html_table(rep["table"])),
                           out=printable(dest), created=created)
    store.write_text_atomic(dest / "report.html", html, root=dest)
    store.write_text_atomic(dest / "report.md", _markdown(rep, md_images, created), root=dest)


def _markdown(rep: dict, images: dict[str, list[tuple[str, str]]], created: str) -> str:
    """report.md: every piece of user text escaped (no HTML, links or table breaks)."""
    devices = markdown(", ".join(rep["devices"]))
    parts = [f"# mlplab report\n\n{rep['runs']} runs on {devices}, {created}.\n",
             "## Comparison\n", markdown_table(rep["rows"]), f"\n{FOOTER}\n"]
    parts += [f"Note: {markdown(n)}\n" for n in rep["notes"]]
    titles = {"search": "Search: successive halving",
              "curves": "Learning curves", "overlays": "Overlays", "params": "Accuracy vs size",
              "confusion": "Best model: confusion matrix", "gallery": "Best model: misclassified digits",
              "augmented": "Augmentation: what the network saw"}
    for section, title in titles.items():
        if section in images:
            parts.append(f"## {title}\n")
            parts += [f"![{markdown(c)}]({p})\n" for c, p in images[section]]
    return "\n".join(parts)
