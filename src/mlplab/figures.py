"""The report's figures as data: each section a list of (name, caption that adds to the section
title, PNG bytes), drawn from run records and their comparison (`report.build` puts them
together); the search's log and picture; the classes' names; the best run. A damaged gallery
file is left out with a note, never stopping the report."""

from __future__ import annotations

import json
from pathlib import Path

from . import data as data_mod
from . import layout, plots, store
from .errors import UserError
from .records import Configuration, RunRecord

Figures = list[tuple[str, str, bytes]]
GALLERY_MAX_BYTES = 16 << 20


def class_names(run: RunRecord) -> tuple[str, ...]:
    """The classes' names: stored with the run (folder names, a Parquet file's names, a
    `classes` list), else the registered dataset's, else the class indices."""
    n = len(run.metrics["per_class_acc"])
    stored = run.metrics.get("classes")
    if isinstance(stored, list) and len(stored) == n and all(isinstance(c, str) for c in stored):
        return tuple(stored)
    spec = data_mod.DATASETS.get(run.settings["dataset"])
    return spec.classes if spec else tuple(str(i) for i in range(n))


def best_run(table: list[Configuration], runs: list[RunRecord]) -> RunRecord | None:
    """The best configuration's run with the highest validation accuracy."""
    ranked = [e for e in table if e.ranked]
    if not ranked:
        return None
    ids = set(ranked[0].run_ids)
    return max((r for r in runs if r.run_id in ids and r.status == "finished"), key=lambda r: r.val_acc)


def search_log(out: Path) -> dict | None:
    """OUT/search.json (written by a run with successive halving), or None."""
    try:
        return json.loads(layout.search(out).read_text())
    except (OSError, ValueError):
        return None


def budget_text(search: dict) -> str:
    """'228 model-epochs of the 900 a full grid would spend (25%)'."""
    spent, full = search["model_epochs"], search["full_grid_model_epochs"]
    return f"{spent:,} model-epochs of the {full:,} a full grid would spend ({spent / full:.0%})"


def _rungs(pruned_at: dict[str, int | None], search: dict | None) -> list[int]:
    """The rung epochs: from search.json, else where configurations were pruned."""
    return [r["epoch"] for r in search["rungs"]] if search else sorted(
        {p for p in pruned_at.values() if p})


def pruned_at(table: list[Configuration]) -> dict[str, int | None]:
    """Configuration name -> the epoch where successive halving pruned it (None: never)."""
    return {e.experiment: e.pruned_at for e in table}


def search_figure(pruned: dict[str, int | None], by_exp: dict, search: dict | None):
    """The picture of a search (plots.search_plot) from where each configuration was pruned
    (`pruned_at`), their histories and search.json; at a rung, a configuration kept for being
    within seed noise of the last of the best 1/eta gets an open circle, one kept as the best
    with a value of a setting an open square (rule "noise")."""
    metric = search["metric"] if search else "val_acc"
    fig = plots.search_plot(by_exp, pruned, _rungs(pruned, search), metric,
                            search["eta"] if search else 3)
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


def search_section(table: list[Configuration], by_exp: dict, search: dict | None) -> Figures:
    pruned = pruned_at(table)
    caption = (f"successive halving: {len(by_exp)} configurations; rungs at epoch "
               f"{', '.join(map(str, _rungs(pruned, search)))}")
    if search:
        kept = f"the best 1/{search['eta']} went on"
        if search.get("rule", "top") == "noise":  # search.json of older versions has no rule: top
            kept += " with every one within seed noise of them (open marks)"
        caption += (f"; at each, ranked by mean {search['metric']} over seeds, {kept}; "
                    f"{budget_text(search)}")
    return [("search", caption, plots.png(search_figure(pruned, by_exp, search)))]


def curves_section(by_exp: dict) -> Figures:
    seeds = sorted({len(v) for v in by_exp.values()})
    return [("learning curves", (
        f"{len(by_exp)} configurations, {'/'.join(map(str, seeds))} seeds each: mean curve, "
        "the band spans the seeds. Blue: training, orange: validation. Every loss panel shares "
        "one scale, every accuracy panel another."), plots.png(plots.curves_grid(by_exp)))]


def overlays_section(by_exp: dict) -> Figures:
    """One overlay per family of names ('mlp[lr=…]') with several members; all of them."""
    families: dict[str, dict] = {}
    for name, hs in by_exp.items():
        families.setdefault(name.split("[")[0], {})[name] = hs
    overlays = [(fam, f"{fam}: the grid's configurations side by side (validation loss)",
                 plots.png(plots.overlay_plot(f"{fam}: validation loss", members)))
                for fam, members in families.items() if len(members) > 1]
    if len(by_exp) > 1 and len(families) > 1:
        overlays.append(("all", "every configuration's mean validation loss",
                         plots.png(plots.overlay_plot("validation loss", by_exp))))
    return overlays


def params_section(table: list[Configuration]) -> Figures:
    return [("accuracy vs parameters", "test accuracy, mean ± std over seeds; points numbered by "
             "rank on validation accuracy", plots.png(plots.params_plot(table)))]


def best_sections(out: Path, best: RunRecord, notes: list[str]) -> dict[str, Figures]:
    """The best run's confusion matrix and misclassified digits."""
    cm, names = best.metrics["confusion_matrix"], class_names(best)
    title, n_test = f"{best.experiment}, seed {best.seed}", sum(map(sum, cm))
    figs = {"confusion": [(title, f"{title}: {n_test:,} test images, accuracy {best.test_acc:.4f} "
                           "(colour: log count)", plots.png(plots.confusion_plot(cm, names, title)))]}
    shape = tuple(best.metrics.get("image_shape") or ())
    gallery = _gallery(layout.run(out, best.run_id) / layout.ERRORS, notes,
                       lambda g: [f"{names[y]} → {names[p]}" for y, p in zip(
                           g["labels"].tolist(), g["preds"].tolist(), strict=True)], shape)
    if gallery:
        images, captions = gallery
        wrong = round((1 - best.test_acc) * n_test)
        figs["gallery"] = [(title, f"the first {len(captions)} of its {wrong} errors, labelled true "
                            "→ predicted", plots.png(plots.gallery_plot(images, captions, title,
                                                                        shape=shape)))]
    return figs


def augmented_section(out: Path, table: list[Configuration], notes: list[str]) -> Figures:
    """What the nets of the first augmented configuration (in rank order) saw."""
    for e in table:
        aug = [p for p in (layout.run(out, i) / layout.AUGMENTED for i in e.run_ids) if p.is_file()]
        gallery = aug and _gallery(aug[0], notes, lambda g: [f"label {y}" for y in g["labels"].tolist()])
        if gallery:
            return [(e.experiment, f"{e.experiment}: three random draws of the first 12 training "
                     "digits", plots.png(plots.gallery_plot(*gallery, e.experiment, cols=12,
                                                            color="black")))]
    return []


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
