"""The Python API: `run` a suite, `load` a results folder, and `Results` / `Run` to look at what was
trained as pandas DataFrames, matplotlib Figures and models that predict.

    import mlplab
    r = mlplab.run("seed", seeds=3)        # a built-in name, a TOML path, a dict or a mlplab.Suite
    r.table()                              # one row per configuration: mean ± std, n, Welch p, rank
    r.to_pandas(); r.history()             # one row per run; one row per run and epoch
    r.plot_curves(); r.best().predict(x)

Everything reads the run store (SQLite + run folders), the same one the CLI writes, so a folder
written by `mlplab run` loads here and the other way round.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import compare, plots, report, store
from .config import RUN_FIELDS
from .errors import UserError
from .inputs import check_names, check_path, check_run_options
from .suite import Suite, apply_overrides, load_suite, parse_suite
from .trained import Run

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def as_suite(suite: str | Path | dict | Suite) -> Suite:
    """A built-in suite name, a TOML path, a dict (the TOML's layout; `experiments` or
    `experiment`) or a Suite -> a validated Suite."""
    if isinstance(suite, Suite):
        return suite
    if isinstance(suite, dict):
        return Suite(**suite) if "experiments" in suite else parse_suite(suite, suite.get("name", "suite"))
    if isinstance(suite, str | Path):
        return load_suite(str(suite))
    raise UserError(f"suite: expected a built-in name, a TOML path, a dict or a mlplab.Suite, "
                    f"got {type(suite).__name__}")


def run(suite: str | Path | dict | Suite = "quick", out: str | Path | None = None, *,
        seeds: int | None = None, epochs: int | None = None, only: str | list[str] | None = None,
        device: str = "auto", progress: bool | Callable[[dict], None] = True,
        data_dir: str | Path | None = None, workers: int | None = None,
        cluster: str | None = None, security=None, checkpoint_every: float | None = 60.0) -> Results:
    """Train every configuration of `suite` (several seeds each, same-shape runs fused) and
    return its Results.

    out: results folder; runs already finished there are not trained again (resume). None keeps
    everything in a temporary folder that goes away with the Results (`Results.save` keeps it).
    seeds, epochs, only: as the CLI's --seeds, --epochs, --only. device: auto, cpu or cuda.
    progress: True shows live progress where you are (a notebook, a terminal, or plain lines in
    a log), False shows nothing, a callable receives the raw progress events.
    workers / cluster: train the groups on a local Dask cluster / an existing scheduler (a tls://
    one with `security`, a `distributed.security.Security`). checkpoint_every: seconds between a
    group's epoch checkpoints (0: every epoch; inf: only at halving rungs; None: none), from
    which an interrupted run resumes. A bad argument raises UserError before anything is
    written."""
    from . import sweep
    from .interrupt import for_call
    from .progress import progress_view

    check_path(out, "out", folder=None)
    if not (isinstance(progress, bool) or callable(progress)):
        raise UserError(f"progress must be True, False or a callable receiving events, got {progress!r}")
    check_run_options(device, workers, cluster, checkpoint_every, data_dir)
    s = apply_overrides(as_suite(suite), epochs=epochs, seeds=seeds, only=check_names(only, "only"))
    temporary = out is None
    folder = Path(tempfile.mkdtemp(prefix="mlplab-")) if temporary else Path(out)
    try:
        with progress_view(progress) as view:
            try:
                rows = sweep.run_suite(s, folder, device=device, data_dir=data_dir and str(data_dir),
                                       progress=view, workers=workers, cluster=cluster,
                                       security=security, checkpoint_every=checkpoint_every)
            except KeyboardInterrupt as e:  # what was saved, in two lines; the cell still stops
                raise for_call(e, view, temporary) from None
    except BaseException:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return Results(folder, [r["run_id"] for r in rows], name=s.name, temporary=temporary)


def load(out: str | Path, experiments: list[str] | None = None) -> Results:
    """The Results stored in a results folder (written by `mlplab run` or `mlplab.run`)."""
    res = Results(out)
    if experiments:
        res = res.filter(experiments)
    return res


class Results:
    """The runs of one results folder (or a selection of them), read from its store."""

    def __init__(self, out: str | Path, run_ids: list[str] | None = None, name: str | None = None,
                 temporary: bool = False):
        self.out = Path(check_path(out, "out", required=True))
        self._rows, self._hist = store.snapshot(self.out, run_ids)  # UserError: no store
        self.name = name or self.out.name
        self._temporary = temporary
        if temporary:  # the folder lives as long as this object (and its Runs)
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.out), True)

    # --- selection ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Run]:
        return (Run(self, r) for r in self._rows)

    def __getitem__(self, run_id: str) -> Run:
        """A run by its id or a unique prefix of it."""
        found = [r for r in self._rows if r["run_id"].startswith(str(run_id))]
        if len(found) != 1:
            what = "no run" if not found else f"{len(found)} runs"
            raise KeyError(f"{what} with id {run_id!r} in {self.out}")
        return Run(self, found[0])

    def filter(self, experiments: str | list[str]) -> Results:
        """Only the runs of these configurations (names as in `table()`)."""
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
            raise UserError(f"{self.out}: no finished run to choose from")
        return Run(self, best)

    # --- data frames -------------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """One row per run: run_id, experiment, seed, status, final metrics, then every config
        key as a column (as Optuna's trials_dataframe or Ray Tune's get_dataframe)."""
        import pandas as pd

        records = []
        for r in self._rows:
            cfg = json.loads(r["config"])
            rec = {k: r[k] for k in store.COLUMNS if k != "finished_at"}
            rec.update({k: _cell(cfg.get(k)) for k in _CONFIG_COLUMNS})
            records.append(rec)
        return pd.DataFrame.from_records(records, columns=_run_columns())

    def table(self) -> pd.DataFrame:
        """The comparison table, one row per configuration in rank order: mean and std over seeds
        of validation and test accuracy and loss, n (seeds in the means) of runs, diverged and
        chance-level runs (never averaged), the epoch where successive halving pruned it (never
        ranked), Welch's p against the best and the marker the report shows ('best', '≈', 'n/a',
        '', 'pruned at epoch 3'), and bn_warning: None, or why BatchNorm's moving statistics
        cannot be trusted and the fix (the table's ⚠)."""
        import pandas as pd

        recs, table = [], self._comparison()
        keys = compare.differing(table)  # the settings that tell the configurations apart
        for e in table:
            rec = {"rank": e["rank"], "model": e["experiment"], "architecture": e["architecture"],
                   **{k: _cell(e["config"].get(k)) for k in keys},
                   "params": e["params"], "n": e["n"], "runs": e["runs"], "diverged": e["diverged"],
                   "chance": e["chance"], "pruned_at": e["pruned_at"]}
            for key in compare.METRICS:
                rec[key] = e[key]
                if key not in ("train_seconds", "epochs_run"):
                    rec[f"{key}_std"] = e[f"{key}_std"]
            rec.update({"p_vs_best": e["p"], "vs_best": e["marker"],
                        "bn_warning": e["bn_warning"]})  # BatchNorm statistics not to be trusted
            recs.append(rec)
        df = pd.DataFrame.from_records(recs)
        if len(df):
            df["rank"] = df["rank"].astype("Int64")
            df["pruned_at"] = df["pruned_at"].astype("Int64")
        return df.set_index("model") if len(df) else df

    def history(self) -> pd.DataFrame:
        """Per-epoch metrics in long form: one row per run and epoch (run_id, experiment, seed,
        epoch, train/val loss and accuracy, lr, seconds)."""
        import pandas as pd

        recs = [{"run_id": r["run_id"], "experiment": r["experiment"], "seed": r["seed"], **h}
                for r in self._rows for h in self._hist[r["run_id"]]]
        cols = ["run_id", "experiment", "seed", *store.HISTORY_FIELDS]
        return pd.DataFrame.from_records(recs, columns=cols)

    # --- figures -----------------------------------------------------------------------------
    def plot_curves(self) -> Figure:
        """Loss and accuracy curves, train and validation, one small panel per configuration on
        shared axes (mean over seeds, the seed range shaded)."""
        return plots.curves_grid(self._by_experiment())

    def plot_overlay(self, metric: str = "val_loss") -> Figure:
        """One mean curve per configuration of `metric` (val_loss, val_acc, train_loss, ...)."""
        if metric not in store.HISTORY_FIELDS[1:]:
            raise UserError(f"metric {metric!r} is not one of: {', '.join(store.HISTORY_FIELDS[1:])}")
        return plots.overlay_plot(metric.replace("_", " "), self._by_experiment(), metric)

    def plot_params(self) -> Figure:
        """Test accuracy (mean ± std over seeds) against the parameter count."""
        return plots.params_plot(self._comparison())

    def search(self) -> dict | None:
        """What successive halving decided (None without it): method, eta, metric, each rung's
        epoch with the configurations kept and pruned, model_epochs spent and
        full_grid_model_epochs (what training every configuration to its end would spend)."""
        return report.search_log(self.out)

    def plot_search(self) -> Figure:
        """Each configuration's mean validation curve, ending where it was pruned; the rungs."""
        return report.search_figure(self._comparison(), self._by_experiment(), self.search())

    def plot_confusion(self, run: str | None = None) -> Figure:
        """The confusion matrix on the test set of `run` (default: `best()`)."""
        return self._run(run).plot_confusion()

    def plot_errors(self, run: str | None = None) -> Figure:
        """Misclassified test digits (true → predicted) of `run` (default: `best()`)."""
        return self._run(run).plot_errors()

    def report(self) -> Path:
        """Write report.html and report.md into the results folder; the HTML file's path."""
        return report.write_report(self.out, [r["run_id"] for r in self._rows])["html"]

    def save(self, folder: str | Path) -> Results:
        """Copy this results folder (a temporary one, say) to `folder`; its Results."""
        dest = Path(check_path(folder, "folder", required=True))
        if dest.exists() and any(dest.iterdir()):
            raise UserError(f"{dest}: exists and is not empty")
        shutil.copytree(self.out, dest, dirs_exist_ok=True)
        return Results(dest, [r["run_id"] for r in self._rows], name=self.name)

    def export_runs(self, to: str, dest: str | Path | None = None, *, tracking_uri: str | None = None,
                    experiment: str | None = None) -> dict:
        """These runs in MLflow (`to="mlflow"`: tracking_uri, experiment default to MLflow's own
        URI and this Results' name), TensorBoard (`"tensorboard"`, dest: a folder) or a Parquet
        table (`"parquet"`, dest: a file); runs already exported are skipped. See
        mlplab.tracking.export_runs."""
        from .tracking import export_runs

        return export_runs(self, to, dest, tracking_uri=tracking_uri, experiment=experiment)

    # --- display -----------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"<mlplab.Results {self.name!r}: {len(self._rows)} runs, "
                f"{len(self._comparison())} configurations, in {self.out}>")

    def _repr_html_(self) -> str:
        """Jupyter shows a Results as its comparison table."""
        caption = f"{self.name}: {len(self._rows)} runs in {self.out}"
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
            raise UserError(f"{self.out}: no run with a history to plot")
        return out

    def _run(self, run: str | None) -> Run:
        return self.best() if run is None else self[run]


def _cell(v: Any) -> Any:
    """Config values as DataFrame cells: lists (per-layer stddevs) as text, so columns stay
    hashable and comparable."""
    return json.dumps(v) if isinstance(v, list) else v


_CONFIG_COLUMNS = [k for k in RUN_FIELDS if k not in store.COLUMNS and k != "name"]


def _run_columns() -> list[str]:
    return [k for k in store.COLUMNS if k != "finished_at"] + _CONFIG_COLUMNS
