"""`Results`: the runs of one results folder, or of several compared as one (`mlplab.load([a, b])`),
as pandas DataFrames, matplotlib Figures and `Run`s that predict. Read from the run store only
(the same one the CLI writes); names as `studies` gives them."""

from __future__ import annotations

import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from . import compare, plots, records, report, studies, tracking
from .errors import UserError
from .figures import best_run, pruned_at, search_figure, search_log
from .inputs import check_names, check_path
from .records import HISTORY_FIELDS, Configuration, RunRecord
from .showing import adopt
from .trained import Run

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from .suite import Suite


class Results:
    """The runs of one results folder, or of a list of them (the same configuration matched
    across folders; the column `folder` says where each run came from), or a selection of them.
    out: the folder (None when there are several; `folders` lists them)."""

    def __init__(self, out: str | Path | list, run_ids: list[str] | None = None, name: str | None = None,
                 temporary: bool = False, suite: Suite | None = None):
        study = studies.read(studies.folders(out), run_ids)  # UserError: no store there
        self.folders: list[Path] = study.folders
        self.out: Path | None = self.folders[0] if len(self.folders) == 1 else None
        self._runs: list[RunRecord] = study.runs
        self._where, self._labels = study.where, study.labels
        self.name = name or " + ".join(study.labels.values())
        self.suite = suite  # the Suite that trained them, when `mlplab.run` made these Results
        self._temporary = temporary
        if temporary:  # the folder lives as long as this object (and its Runs)
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.out), True)

    # --- selection ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator[Run]:
        return (self._make_run(r) for r in self._runs)

    def __getitem__(self, run_id: str) -> Run:
        """A run by its id or a unique prefix of it."""
        found = [r for r in self._runs if r.run_id.startswith(str(run_id))]
        if len(found) != 1:
            what = "no run" if not found else f"{len(found)} runs"
            raise KeyError(f"{what} with id {run_id!r} in {self._place()}")
        return self._make_run(found[0])

    def filter(self, experiments: str | list[str]) -> Results:
        """Only the runs of these configurations (names as in `table()`; they stay the same)."""
        names = list(check_names(experiments, "experiments"))
        ids = {e.experiment: e.run_ids for e in self._comparison()}
        missing = [n for n in names if n not in ids]
        if missing:
            raise UserError(f"no configuration named {missing[0]!r}; there are: {', '.join(ids)}")
        keep = {i for n in names for i in ids[n]}
        sub = Results.__new__(Results)
        sub.__dict__.update(self.__dict__)
        sub._parent = self  # keeps a temporary folder alive
        sub._runs = [r for r in self._runs if r.run_id in keep]
        return sub

    def best(self) -> Run:
        """The best configuration's run with the highest validation accuracy (never chosen on
        the test set)."""
        best = best_run(self._comparison(), self._runs)
        if best is None:
            raise UserError(f"{self._place()}: no finished run to choose from")
        return self._make_run(best)

    # --- data frames -------------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """One row per run: run_id, experiment, seed, status, final metrics, folder (where it is
        stored), then every config key as a column (as Optuna's trials_dataframe or Ray Tune's
        get_dataframe)."""
        return records.run_frame(self._runs)

    def table(self) -> pd.DataFrame:
        """The comparison table, one row per configuration in rank order: mean and std over seeds
        of validation and test accuracy and loss, n (seeds in the means) of runs, diverged and
        chance-level runs (never averaged), the epoch where successive halving pruned it (never
        ranked), Welch's p against the best and the marker the report shows ('best', '≈', 'n/a',
        '', 'pruned at epoch 3'), and bn_warning: None, or why BatchNorm's moving statistics
        cannot be trusted and the fix (the table's ⚠). Over several folders, `folders` says
        which hold the configuration's runs. An empty folder gives the same columns, no rows."""
        table = self._comparison()
        keys = compare.differing(table)  # the settings that tell the configurations apart
        folders = None
        if len(self.folders) > 1:
            folders = {e.experiment: ", ".join(dict.fromkeys(
                self._labels[self._where[i]] for i in e.run_ids)) for e in table}
        return records.table_frame(table, keys, folders)

    def history(self) -> pd.DataFrame:
        """Per-epoch metrics in long form: one row per run and epoch (run_id, experiment, seed,
        epoch, train/val loss and accuracy, lr, seconds); `to_pandas()` has each run's folder."""
        return records.history_frame(self._runs)

    # --- figures (shown once in Jupyter however they are shown: see showing.py) -------------
    def plot_curves(self) -> Figure:
        """Loss and accuracy curves, train and validation, one small panel per configuration on
        shared axes (mean over seeds, the seed range shaded)."""
        return adopt(plots.curves_grid(self._by_experiment()))

    def plot_overlay(self, metric: str = "val_loss") -> Figure:
        """One mean curve per configuration of `metric` (val_loss, val_acc, train_loss, ...)."""
        if metric not in HISTORY_FIELDS[1:]:
            raise UserError(f"metric {metric!r} is not one of: {', '.join(HISTORY_FIELDS[1:])}")
        return adopt(plots.overlay_plot(metric.replace("_", " "), self._by_experiment(), metric))

    def plot_params(self) -> Figure:
        """Test accuracy (mean ± std over seeds) against the parameter count."""
        return adopt(plots.params_plot(self._comparison()))

    def search(self) -> dict | None:
        """What successive halving decided (None without it): method, eta, metric, each rung's
        epoch with the configurations kept and pruned, model_epochs spent and
        full_grid_model_epochs (what training every configuration to its end would spend)."""
        return search_log(self._one("search()"))

    def plot_search(self) -> Figure:
        """Each configuration's mean validation curve, ending where it was pruned; the rungs."""
        return adopt(search_figure(pruned_at(self._comparison()), self._by_experiment(), self.search()))

    def plot_confusion(self, run: str | None = None) -> Figure:
        """The confusion matrix on the test set of `run` (default: `best()`)."""
        return self._run(run).plot_confusion()

    def plot_errors(self, run: str | None = None) -> Figure:
        """Misclassified test digits (true → predicted) of `run` (default: `best()`)."""
        return self._run(run).plot_errors()

    # --- files -------------------------------------------------------------------------------
    def report(self) -> Path:
        """Write report.html and report.md into the results folder; the HTML file's path."""
        return report.write_report(self._one("report()"), [r.run_id for r in self._runs])["html"]

    def save(self, folder: str | Path) -> Results:
        """Copy this results folder (a temporary one, say) to `folder`; its Results."""
        source = self._one("save()")
        dest = Path(check_path(folder, "folder", required=True))
        if dest.exists() and any(dest.iterdir()):
            raise UserError(f"{dest}: exists and is not empty")
        shutil.copytree(source, dest, dirs_exist_ok=True)
        return Results(dest, [r.run_id for r in self._runs], name=self.name)

    def export_runs(self, to: str, dest: str | Path | None = None, *, tracking_uri: str | None = None,
                    experiment: str | None = None) -> dict:
        """These runs in MLflow (`to="mlflow"`: tracking_uri, experiment default to MLflow's own
        URI and this Results' name), TensorBoard (`"tensorboard"`, dest: a folder) or a Parquet
        table (`"parquet"`, dest: a file); runs already exported are skipped. See
        mlplab.tracking.export_runs."""
        folder = self._one("export_runs()")
        return tracking.export_runs(self._runs, to, dest, folder=folder, name=self.name,
                                    tracking_uri=tracking_uri, experiment=experiment)

    # --- display -----------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"<mlplab.Results {self.name!r}: {len(self._runs)} runs, "
                f"{len(self._comparison())} configurations, in {self._place()}>")

    def _repr_html_(self) -> str:
        """Jupyter shows a Results as its comparison table."""
        caption = f"{self.name}: {len(self._runs)} runs in {self._place()}"
        return compare.html_table(self._comparison(), caption=caption)

    # --- internals ---------------------------------------------------------------------------
    def _comparison(self) -> list[Configuration]:
        return compare.comparison(self._runs)

    def _by_experiment(self) -> dict[str, list[list[dict]]]:
        """Histories per configuration (names as in `table()`)."""
        out: dict[str, list[list[dict]]] = {}
        history = {r.run_id: list(r.history) for r in self._runs}
        for e in self._comparison():
            hs = [history[i] for i in e.run_ids if history.get(i)]
            if hs:
                out[e.experiment] = hs
        if not out:
            raise UserError(f"{self._place()}: no run with a history to plot")
        return out

    def _run(self, run: str | None) -> Run:
        return self.best() if run is None else self[run]

    def _make_run(self, run: RunRecord) -> Run:
        return Run(run, self._where[run.run_id], owner=self)

    def _place(self) -> str:
        return str(self.out) if self.out is not None else ", ".join(map(str, self.folders))

    def _one(self, what: str) -> Path:
        """The one folder, for what works on a single folder."""
        if self.out is None:
            raise UserError(f"{what} works on one results folder and these Results span "
                            f"{len(self.folders)}; call it on mlplab.load(FOLDER)")
        return self.out

