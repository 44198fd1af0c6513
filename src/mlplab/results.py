"""`Results`: the runs of one results folder, or of several compared as one (`mlplab.load([a, b])`),
as pandas DataFrames, matplotlib Figures and `Run`s that predict. Read from the run store only
(the same one the CLI writes); names as `studies` gives them."""

from __future__ import annotations

import json
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import compare, plots, report, store, studies
from .config import RUN_FIELDS
from .errors import UserError
from .inputs import check_names, check_path
from .showing import adopt
from .trained import Run

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


class Results:
    """The runs of one results folder, or of a list of them (the same configuration matched
    across folders; the column `folder` says where each run came from), or a selection of them.
    out: the folder (None when there are several; `folders` lists them)."""

    def __init__(self, out: str | Path | list, run_ids: list[str] | None = None, name: str | None = None,
                 temporary: bool = False):
        study = studies.read(studies.folders(out), run_ids)  # UserError: no store there
        self.folders: list[Path] = study.folders
        self.out: Path | None = self.folders[0] if len(self.folders) == 1 else None
        self._rows, self._hist, self._where = study.rows, study.hist, study.where
        self._labels = study.labels
        self.name = name or " + ".join(study.labels.values())
        self._temporary = temporary
        if temporary:  # the folder lives as long as this object (and its Runs)
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.out), True)

    # --- selection ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Run]:
        return (self._make_run(r) for r in self._rows)

    def __getitem__(self, run_id: str) -> Run:
        """A run by its id or a unique prefix of it."""
        found = [r for r in self._rows if r["run_id"].startswith(str(run_id))]
        if len(found) != 1:
            what = "no run" if not found else f"{len(found)} runs"
            raise KeyError(f"{what} with id {run_id!r} in {self._place()}")
        return self._make_run(found[0])

    def filter(self, experiments: str | list[str]) -> Results:
        """Only the runs of these configurations (names as in `table()`; they stay the same)."""
        names = list(check_names(experiments, "experiments"))
        ids = {e["experiment"]: e["run_ids"] for e in self._comparison()}
        missing = [n for n in names if n not in ids]
        if missing:
            raise UserError(f"no configuration named {missing[0]!r}; there are: {', '.join(ids)}")
        keep = {i for n in names for i in ids[n]}
        sub = Results.__new__(Results)
        sub.__dict__.update(self.__dict__)
        sub._parent = self  # keeps a temporary folder alive
        sub._rows = [r for r in self._rows if r["run_id"] in keep]
        return sub

    def best(self) -> Run:
        """The best configuration's run with the highest validation accuracy (never chosen on
        the test set)."""
        best = report.best_run(self._comparison(), self._rows)
        if best is None:
            raise UserError(f"{self._place()}: no finished run to choose from")
        return self._make_run(best)

    # --- data frames -------------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """One row per run: run_id, experiment, seed, status, final metrics, folder (where it is
        stored), then every config key as a column (as Optuna's trials_dataframe or Ray Tune's
        get_dataframe)."""
        import pandas as pd

        records = []
        for r in self._rows:
            cfg = json.loads(r["config"])
            rec = {k: r[k] for k in store.COLUMNS if k != "finished_at"}
            rec["folder"] = r["folder"]
            rec.update({k: _cell(cfg.get(k)) for k in _CONFIG_COLUMNS})
            records.append(rec)
        return pd.DataFrame.from_records(records, columns=_run_columns())

    def table(self) -> pd.DataFrame:
        """The comparison table, one row per configuration in rank order: mean and std over seeds
        of validation and test accuracy and loss, n (seeds in the means) of runs, diverged and
        chance-level runs (never averaged), the epoch where successive halving pruned it (never
        ranked), Welch's p against the best and the marker the report shows ('best', '≈', 'n/a',
        '', 'pruned at epoch 3'), and bn_warning: None, or why BatchNorm's moving statistics
        cannot be trusted and the fix (the table's ⚠). Over several folders, `folders` says
        which hold the configuration's runs. An empty folder gives the same columns, no rows."""
        import pandas as pd

        table = self._comparison()
        keys = compare.differing(table)  # the settings that tell the configurations apart
        several = len(self.folders) > 1
        recs = []
        for e in table:
            rec = {"model": e["experiment"], "rank": e["rank"], "architecture": e["architecture"],
                   **{k: _cell(e["config"].get(k)) for k in keys},
                   "params": e["params"], "n": e["n"], "runs": e["runs"], "diverged": e["diverged"],
                   "chance": e["chance"], "pruned_at": e["pruned_at"]}
            for key in compare.METRICS:
                rec[key] = e[key]
                if key not in ("train_seconds", "epochs_run"):
                    rec[f"{key}_std"] = e[f"{key}_std"]
            rec.update({"p_vs_best": e["p"], "vs_best": e["marker"],
                        "bn_warning": e["bn_warning"]})  # BatchNorm statistics not to be trusted
            if several:
                rec["folders"] = ", ".join(dict.fromkeys(
                    self._labels[self._where[i]] for i in e["run_ids"]))
            recs.append(rec)
        cols = ["model", "rank", "architecture", *keys, *_TABLE_COLUMNS, *(["folders"] * several)]
        df = pd.DataFrame.from_records(recs, columns=cols)
        df["rank"] = df["rank"].astype("Int64")
        df["pruned_at"] = df["pruned_at"].astype("Int64")
        return df.set_index("model")

    def history(self) -> pd.DataFrame:
        """Per-epoch metrics in long form: one row per run and epoch (run_id, experiment, seed,
        epoch, train/val loss and accuracy, lr, seconds); `to_pandas()` has each run's folder."""
        import pandas as pd

        recs = [{"run_id": r["run_id"], "experiment": r["experiment"], "seed": r["seed"], **h}
                for r in self._rows for h in self._hist[r["run_id"]]]
        cols = ["run_id", "experiment", "seed", *store.HISTORY_FIELDS]
        return pd.DataFrame.from_records(recs, columns=cols)

    # --- figures (shown once in Jupyter however they are shown: see showing.py) -------------
    def plot_curves(self) -> Figure:
        """Loss and accuracy curves, train and validation, one small panel per configuration on
        shared axes (mean over seeds, the seed range shaded)."""
        return adopt(plots.curves_grid(self._by_experiment()))

    def plot_overlay(self, metric: str = "val_loss") -> Figure:
        """One mean curve per configuration of `metric` (val_loss, val_acc, train_loss, ...)."""
        if metric not in store.HISTORY_FIELDS[1:]:
            raise UserError(f"metric {metric!r} is not one of: {', '.join(store.HISTORY_FIELDS[1:])}")
        return adopt(plots.overlay_plot(metric.replace("_", " "), self._by_experiment(), metric))

    def plot_params(self) -> Figure:
        """Test accuracy (mean ± std over seeds) against the parameter count."""
        return adopt(plots.params_plot(self._comparison()))

    def search(self) -> dict | None:
        """What successive halving decided (None without it): method, eta, metric, each rung's
        epoch with the configurations kept and pruned, model_epochs spent and
        full_grid_model_epochs (what training every configuration to its end would spend)."""
        return report.search_log(self._one("search()"))

    def plot_search(self) -> Figure:
        """Each configuration's mean validation curve, ending where it was pruned; the rungs."""
        return adopt(report.search_figure(self._comparison(), self._by_experiment(), self.search()))

    def plot_confusion(self, run: str | None = None) -> Figure:
        """The confusion matrix on the test set of `run` (default: `best()`)."""
        return self._run(run).plot_confusion()

    def plot_errors(self, run: str | None = None) -> Figure:
        """Misclassified test digits (true → predicted) of `run` (default: `best()`)."""
        return self._run(run).plot_errors()

    # --- files -------------------------------------------------------------------------------
    def report(self) -> Path:
        """Write report.html and report.md into the results folder; the HTML file's path."""
        return report.write_report(self._one("report()"), [r["run_id"] for r in self._rows])["html"]

    def save(self, folder: str | Path) -> Results:
        """Copy this results folder (a temporary one, say) to `folder`; its Results."""
        source = self._one("save()")
        dest = Path(check_path(folder, "folder", required=True))
        if dest.exists() and any(dest.iterdir()):
            raise UserError(f"{dest}: exists and is not empty")
        shutil.copytree(source, dest, dirs_exist_ok=True)
        return Results(dest, [r["run_id"] for r in self._rows], name=self.name)

    def export_runs(self, to: str, dest: str | Path | None = None, *, tracking_uri: str | None = None,
                    experiment: str | None = None) -> dict:
        """These runs in MLflow (`to="mlflow"`: tracking_uri, experiment default to MLflow's own
        URI and this Results' name), TensorBoard (`"tensorboard"`, dest: a folder) or a Parquet
        table (`"parquet"`, dest: a file); runs already exported are skipped. See
        mlplab.tracking.export_runs."""
        from .tracking import export_runs

        self._one("export_runs()")
        return export_runs(self, to, dest, tracking_uri=tracking_uri, experiment=experiment)

    # --- display -----------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"<mlplab.Results {self.name!r}: {len(self._rows)} runs, "
                f"{len(self._comparison())} configurations, in {self._place()}>")

    def _repr_html_(self) -> str:
        """Jupyter shows a Results as its comparison table."""
        caption = f"{self.name}: {len(self._rows)} runs in {self._place()}"
        return compare.html_table(self._comparison(), caption=caption)

    # --- internals ---------------------------------------------------------------------------
    def _comparison(self) -> list[dict]:
        return compare.comparison(self._rows)

    def _by_experiment(self) -> dict[str, list[list[dict]]]:
        """Histories per configuration (names as in `table()`)."""
        out: dict[str, list[list[dict]]] = {}
        for e in self._comparison():
            hs = [self._hist[i] for i in e["run_ids"] if self._hist.get(i)]
            if hs:
                out[e["experiment"]] = hs
        if not out:
            raise UserError(f"{self._place()}: no run with a history to plot")
        return out

    def _run(self, run: str | None) -> Run:
        return self.best() if run is None else self[run]

    def _make_run(self, row: dict) -> Run:
        return Run(self, row, self._where[row["run_id"]])

    def _place(self) -> str:
        return str(self.out) if self.out is not None else ", ".join(map(str, self.folders))

    def _one(self, what: str) -> Path:
        """The one folder, for what works on a single folder."""
        if self.out is None:
            raise UserError(f"{what} works on one results folder and these Results span "
                            f"{len(self.folders)}; call it on mlplab.load(FOLDER)")
        return self.out


def _cell(v: Any) -> Any:
    """Config values as DataFrame cells: lists (per-layer stddevs) as text, so columns stay
    hashable and comparable."""
    return json.dumps(v) if isinstance(v, list) else v


_CONFIG_COLUMNS = [k for k in RUN_FIELDS if k not in store.COLUMNS and k != "name"]
_TABLE_COLUMNS = ["params", "n", "runs", "diverged", "chance", "pruned_at",
                  *(m for k in compare.METRICS
                    for m in ((k,) if k in ("train_seconds", "epochs_run") else (k, f"{k}_std"))),
                  "p_vs_best", "vs_best", "bn_warning"]


def _run_columns() -> list[str]:
    return [k for k in store.COLUMNS if k != "finished_at"] + ["folder"] + _CONFIG_COLUMNS
