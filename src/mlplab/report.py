"""The report (report.html, report.md, plots/), built from the run store only, so old results
re-report. Its table is `compare.comparison`, its figures `figures` (both re-exported here)."""

from __future__ import annotations

import base64
import datetime as dt
import errno
import os
from importlib import resources
from pathlib import Path

import jinja2
from markupsafe import Markup

from . import figures, layout, plots, safefs, store
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
from .figures import best_run, budget_text, class_names, search_figure, search_log  # noqa: F401
from .layout import REPORT_NAMES, STAMP  # noqa: F401  (re-exported)
from .safetext import markdown, printable


def build(out: Path, run_ids: list[str] | None = None) -> dict:
    """Everything the report shows, as data and figures (bytes), from the store only: the
    comparison ("table", its display "rows"), "figs" (section -> [(name, caption, PNG)]), the
    runs' count and devices, the best run, the histories per configuration and "notes" (what
    had to be left out, and why)."""
    runs = store.snapshot(out, run_ids)
    if not runs:
        raise UserError(f"{out}: the store has no finished runs yet")
    table = comparison(runs)
    notes: list[str] = []
    history = {r.run_id: list(r.history) for r in runs}
    by_exp = {e.experiment: [history[i] for i in e.run_ids if history[i]] for e in table}
    by_exp = {k: v for k, v in by_exp.items() if v}
    figs: dict[str, figures.Figures] = {}
    search = search_log(out)
    if search or any(e.pruned_at for e in table):
        figs["search"] = figures.search_section(table, by_exp, search)
    if by_exp:
        figs["curves"] = figures.curves_section(by_exp)
    figs["overlays"] = figures.overlays_section(by_exp)
    figs["params"] = figures.params_section(table)
    best = best_run(table, runs)
    if best:
        figs.update(figures.best_sections(out, best, notes))
    figs["augmented"] = figures.augmented_section(out, table, notes)
    return {"table": table, "rows": table_rows(table), "figs": {k: v for k, v in figs.items() if v},
            "runs": len(runs), "devices": sorted({r.device or "?" for r in runs}), "best": best,
            "histories": by_exp, "notes": notes}


def write_report(out: str | Path, run_ids: list[str] | None = None,
                 to: str | Path | None = None) -> dict:
    """report.html (self-contained: images inline), report.md (+ report_files/) and
    plots/<experiment>.png + overlay.png, into OUT or into `to` (a folder, created if needed:
    where OUT cannot be written, e.g. read-only media). No link inside that folder is followed.
    Returns the paths ("html", "md") and "notes": what had to be left out (a damaged file)."""
    out = Path(out)
    dest = Path(to) if to is not None else out
    if dest.is_dir():  # before any figure is drawn: a planted link, a read-only folder
        safefs.refuse_links(dest, REPORT_NAMES, layout.REPORT_FOLDERS)
        if not os.access(dest, os.W_OK):
            _unwritable(out, dest, os.strerror(errno.EROFS if _read_only(dest) else errno.EACCES))
    rep = build(out, run_ids)
    try:
        _write_files(dest, rep)
        # which state of the store the report shows (a selection of runs never passes for the whole)
        store.write_text_atomic(layout.stamp(dest), store_state(out) if run_ids is None else "a selection",
                                root=dest)
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        _unwritable(out, dest, e.strerror)
    return {"html": layout.report_html(dest), "md": layout.report_md(dest), "notes": rep["notes"]}


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
        stamp = layout.stamp(out).read_text()
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
        store.write_bytes_atomic(layout.plots(dest) / f"{plots.slug(name)}.png",
                                 plots.png(plots.loss_plot(name, hs)), root=dest)
    store.write_bytes_atomic(layout.plots(dest) / "overlay.png", plots.png(
        plots.overlay_plot("validation loss, every experiment", rep["histories"])), root=dest)
    with safefs.folder(dest, (layout.REPORT_FILES,)) as fd:  # an earlier report's figures must go
        for old in os.listdir(fd):
            if old.endswith(".png"):
                safefs.remove(fd, old)
    md_images: dict[str, list[tuple[str, str]]] = {}
    for section, items in rep["figs"].items():
        for i, (name, caption, data) in enumerate(items):
            path = layout.report_files(dest) / f"{section}-{i:02d}-{plots.slug(name)}.png"
            store.write_bytes_atomic(path, data, root=dest)
            md_images.setdefault(section, []).append((caption, f"{layout.REPORT_FILES}/{path.name}"))
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(
        (resources.files("mlplab") / "templates" / "report.html.j2").read_text())
    b64 = {s: [(c, base64.b64encode(d).decode()) for _, c, d in items] for s, items in rep["figs"].items()}
    created = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    html = template.render(rep=rep, figs=b64, table_html=Markup(html_table(rep["table"])),
                           out=printable(dest), created=created)
    store.write_text_atomic(layout.report_html(dest), html, root=dest)
    store.write_text_atomic(layout.report_md(dest), _markdown(rep, md_images, created), root=dest)


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
