"""One or several results folders read as one set of runs, for `Results`.

Names are a property of the folders, not of a selection: every configuration is named once over
all the runs of all the folders (`compare.comparison`: names made unique by the settings that
differ), and a selection (`run(...)`'s own runs, `filter`) keeps those names. So the same runs are
named alike however a Results was obtained. Across folders the same configuration (the same
`search.config_key`: every setting but the seed) is one configuration; a run stored in two
folders (same configuration and seed, the same run id) counts once, from the first folder given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import compare, store
from .errors import UserError
from .inputs import check_path
from .records import RunRecord


@dataclass
class Study:
    runs: list[RunRecord]  # the selected runs: experiment = the name over all folders, folder = label
    where: dict[str, Path]  # run id -> its folder
    folders: list[Path]
    labels: dict[Path, str]  # folder -> how the "folder" column names it


def folders(out: Any) -> list[Path]:
    """A folder, or a list / tuple of folders, as checked paths (each at most once)."""
    items = list(out) if isinstance(out, list | tuple) else [out]
    if not items:
        raise UserError("out: give a results folder, or a list of them")
    paths = [Path(check_path(o, "out", required=True)) for o in items]
    seen: dict[str, Path] = {}
    for p in paths:
        key = os.path.realpath(p)
        if key in seen:
            raise UserError(f"out: {p} is given twice (as {seen[key]})")
        seen[key] = p
    return paths


def labels(paths: list[Path]) -> dict[Path, str]:
    """Each folder by its name, or by its whole path where two folders share a name."""
    names = [p.resolve().name or str(p) for p in paths]
    return {p: n if names.count(n) == 1 else str(p) for p, n in zip(paths, names, strict=True)}


def read(paths: list[Path], run_ids: list[str] | None = None) -> Study:
    """The runs of these folders (only `run_ids` where given, in that order), named over all."""
    label = labels(paths)
    every: list[RunRecord] = []
    where: dict[str, Path] = {}
    for folder in paths:
        for r in store.snapshot(folder):  # UserError: no store there
            if r.run_id not in where:  # a run in two folders: the first folder's copy
                where[r.run_id] = folder
                every.append(replace(r, folder=label[folder]))
    names = {i: e.experiment for e in compare.comparison(every) for i in e.run_ids}
    every = [replace(r, experiment=names[r.run_id]) for r in every]
    if run_ids is not None:
        by_id = {r.run_id: r for r in every}
        every = [by_id[i] for i in dict.fromkeys(run_ids) if i in by_id]
    return Study(every, {r.run_id: where[r.run_id] for r in every}, paths, label)
