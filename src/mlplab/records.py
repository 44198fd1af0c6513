"""What the results side works with, typed: one frozen `RunRecord` per stored run (its columns,
its config and metrics parsed once from the store's JSON, its per-epoch history) and one frozen
`Configuration` per compared configuration (`compare.comparison` makes them); the column lists
of the store, results.csv and the DataFrames, declared once; and the DataFrames themselves,
built here from those objects only. Torch-free; pandas is imported when a frame is asked for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .config import RUN_FIELDS, RunConfig

if TYPE_CHECKING:
    import pandas as pd

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
# Scalar columns of the store's `runs` table (a user may filter or sort on them: mlplab runs).
COLUMNS = ("run_id", "experiment", "architecture", "params", "seed", "epochs_run", "best_epoch",
           "val_loss", "val_acc", "test_loss", "test_acc", "train_seconds", "status", "device",
           "finished_at")
RESULT_FIELDS = COLUMNS[:13]  # results.csv: the columns without device and finished_at
# The metrics a comparison averages over seeds; the last two get no std column in table().
METRICS = ("val_loss", "val_acc", "test_loss", "test_acc", "train_seconds", "epochs_run")
NO_STD = ("train_seconds", "epochs_run")


@dataclass(frozen=True, eq=False)
class RunRecord:
    """One stored run, read once from the store: its columns, `settings` (its config as stored,
    a JSON object; `config` is the validated RunConfig), `metrics` (everything it measured:
    metrics.json), `history` (one dict of HISTORY_FIELDS per epoch) and `folder` (how a study
    names the results folder it came from)."""

    run_id: str
    experiment: str  # its configuration's name (over a whole study: studies.read)
    architecture: str
    params: int
    seed: int
    epochs_run: int | None = None
    best_epoch: int | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    train_seconds: float | None = None
    status: str = "finished"
    device: str | None = None
    finished_at: float | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    history: tuple[Mapping[str, float], ...] = ()
    folder: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], history: Iterable[Mapping[str, float]] = ()) -> RunRecord:
        """A row of the store's `runs` table (COLUMNS + config and metrics as JSON text)."""
        return cls(**{c: row.get(c) for c in COLUMNS if c in row},
                   settings=json.loads(row.get("config") or "{}"),
                   metrics=json.loads(row.get("metrics") or "{}"),
                   history=tuple(history), folder=row.get("folder"))

    @cached_property
    def config(self) -> RunConfig:
        """The run's config, validated (on first use: a report of old runs never needs it)."""
        return RunConfig.model_validate(dict(self.settings))

    @property
    def pruned_at(self) -> int | None:
        """The epoch where successive halving stopped it, or None."""
        return self.epochs_run if self.status == "pruned" else None

    def columns(self, names: Iterable[str] = COLUMNS) -> dict[str, Any]:
        return {c: getattr(self, c) for c in names}

    def value(self, key: str) -> Any:
        """A store column, or else a config setting (None where the run has none)."""
        return getattr(self, key) if key in COLUMNS else self.settings.get(key)


@dataclass(frozen=True, eq=False)
class Configuration:
    """One configuration of a comparison (every setting but the seed): its runs' ids, counts,
    mean and std over the seeds that count of each of METRICS, its rank (by mean validation
    accuracy; None when unranked), Welch's p against the best and the marker shown for it
    ('best', '≈', 'n/a', '', 'pruned at epoch 3')."""

    experiment: str  # unique among the configurations compared
    architecture: str
    settings: Mapping[str, Any]  # every setting but name and seed
    params: int
    n: int  # seeds in the means
    runs: int
    diverged: int
    chance: int
    ranked: bool
    pruned_at: int | None
    run_ids: tuple[str, ...]
    val_accs: tuple[float, ...]  # of the seeds in the means (Welch's test)
    mean: Mapping[str, float]
    std: Mapping[str, float]
    bn_warning: str | None = None
    rank: int | None = None
    p: float | None = None
    marker: str = ""

    def row(self, keys: Iterable[str]) -> dict[str, Any]:
        """This configuration as a row of `Results.table()` (the settings `keys` as columns)."""
        rec = {"model": self.experiment, "rank": self.rank, "architecture": self.architecture,
               **{k: cell(self.settings.get(k)) for k in keys},
               "params": self.params, "n": self.n, "runs": self.runs, "diverged": self.diverged,
               "chance": self.chance, "pruned_at": self.pruned_at}
        for key in METRICS:
            rec[key] = self.mean[key]
            if key not in NO_STD:
                rec[f"{key}_std"] = self.std[key]
        return {**rec, "p_vs_best": self.p, "vs_best": self.marker, "bn_warning": self.bn_warning}


def cell(v: Any) -> Any:
    """Config values as DataFrame cells: lists (per-layer stddevs) as text, so columns stay
    hashable and comparable."""
    return json.dumps(v) if isinstance(v, list) else v


CONFIG_COLUMNS = [k for k in RUN_FIELDS if k not in COLUMNS and k != "name"]
SHOWN_COLUMNS = [c for c in COLUMNS if c != "finished_at"]  # the store's columns a run frame shows
RUN_COLUMNS = [*SHOWN_COLUMNS, "folder", *CONFIG_COLUMNS]
TABLE_COLUMNS = ["params", "n", "runs", "diverged", "chance", "pruned_at",
                 *(m for k in METRICS for m in ((k,) if k in NO_STD else (k, f"{k}_std"))),
                 "p_vs_best", "vs_best", "bn_warning"]


def run_frame(runs: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per run: RUN_COLUMNS (store columns, folder, every config key)."""
    import pandas as pd

    recs = [{**r.columns(SHOWN_COLUMNS), "folder": r.folder,
             **{k: cell(r.settings.get(k)) for k in CONFIG_COLUMNS}} for r in runs]
    return pd.DataFrame.from_records(recs, columns=RUN_COLUMNS)


def history_frame(runs: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per run and epoch: run_id, experiment, seed, HISTORY_FIELDS."""
    import pandas as pd

    recs = [{"run_id": r.run_id, "experiment": r.experiment, "seed": r.seed,
             **{k: h.get(k) for k in HISTORY_FIELDS}} for r in runs for h in r.history]
    return pd.DataFrame.from_records(recs, columns=["run_id", "experiment", "seed", *HISTORY_FIELDS])


def table_frame(table: list[Configuration], keys: list[str],
                folders: dict[str, str] | None = None) -> pd.DataFrame:
    """The comparison as a DataFrame indexed by model: one row per configuration, the differing
    settings `keys` as columns; `folders` (configuration name -> where its runs are) adds a
    column when runs come from several folders."""
    import pandas as pd

    several = folders is not None
    recs = [{**e.row(keys), **({"folders": folders[e.experiment]} if several else {})} for e in table]
    cols = ["model", "rank", "architecture", *keys, *TABLE_COLUMNS, *(["folders"] * several)]
    df = pd.DataFrame.from_records(recs, columns=cols)
    df["rank"] = df["rank"].astype("Int64")
    df["pruned_at"] = df["pruned_at"].astype("Int64")
    return df.set_index("model")
