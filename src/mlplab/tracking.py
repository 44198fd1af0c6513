"""Results where people look: the runs of a results folder exported to MLflow, TensorBoard or a
Parquet table (`mlplab export-runs OUT --to …`, `Results.export_runs(…)`).

Each target is the real library behind an optional extra (`mlplab[mlflow]`, `mlplab[tensorboard]`,
`mlplab[parquet]`); a missing one is a one-line UserError naming the extra, raised before anything
is written. The runs are read through Results (the store's own read path). Exporting again adds
only the runs not there yet: MLflow finds them by their `mlplab.run_id` tag, TensorBoard by their
folder (written under a temporary name and renamed, so a folder is always complete), and the
Parquet file is rewritten whole, atomically.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import store
from .errors import UserError

if TYPE_CHECKING:
    from .api import Results

# store name -> exported name. Per epoch (MLflow: step = epoch); the final metrics of a run get
# names of their own, so that a metric's history holds exactly one value per epoch.
EPOCH_METRICS = {"train_loss": "train_loss", "train_acc": "train_acc", "val_loss": "val_loss",
                 "val_acc": "val_acc", "lr": "lr", "seconds": "epoch_seconds"}
FINAL_METRICS = {"test_acc": "test_acc", "test_loss": "test_loss", "val_acc": "final_val_acc",
                 "val_loss": "final_val_loss", "best_epoch": "best_epoch", "epochs_run": "epochs_run",
                 "train_seconds": "train_seconds", "params": "param_count"}


def export_runs(results: Results, to: str, dest: str | Path | None = None, *,
                tracking_uri: str | None = None, experiment: str | None = None) -> dict:
    """Export every run of `results` `to` "mlflow", "tensorboard" (dest: a folder) or "parquet"
    (dest: a file). MLflow: tracking_uri (default: MLflow's own, MLFLOW_TRACKING_URI or
    sqlite:///mlflow.db) and experiment (default: results.name). Returns what was done: to,
    where, exported, skipped (already there) and, for MLflow, experiment_id and parent_run_id."""
    if to not in EXPORTERS:
        raise UserError(f"--to {to!r}: not a target; allowed: {', '.join(EXPORTERS)}")
    if to == "mlflow" and dest is not None:
        raise UserError("--to mlflow writes to a tracking server or database, not to DEST: "
                        "give --tracking-uri URI (tracking_uri= in Python)")
    if to != "mlflow":
        if dest is None:
            raise UserError(f"--to {to} needs DEST: the {'folder' if to == 'tensorboard' else 'file'} "
                            "to write")
        if tracking_uri is not None or experiment is not None:
            raise UserError("--tracking-uri and --experiment are for --to mlflow")
    runs = run_records(results)
    if not runs:
        raise UserError(f"{results.out}: no runs to export")
    return EXPORTERS[to](runs, results, dest, tracking_uri=tracking_uri, experiment=experiment)


def run_records(results: Results) -> list[dict]:
    """One dict per run: run_id, name (the configuration's name as in `table()`), seed, status,
    pruned_at, config (as stored), final (store columns), history (one dict per epoch),
    finished_at, device."""
    names = {i: e["experiment"] for e in results._comparison() for i in e["run_ids"]}
    recs = []
    for row in results._rows:
        rid = row["run_id"]
        recs.append({"run_id": rid, "name": names.get(rid, row["experiment"]), "seed": row["seed"],
                     "status": row["status"], "config": json.loads(row["config"]),
                     "pruned_at": row["epochs_run"] if row["status"] == "pruned" else None,
                     "final": {k: row[k] for k in FINAL_METRICS}, "history": results._hist.get(rid, []),
                     "finished_at": row["finished_at"], "device": row["device"]})
    return recs


def flat_config(config: dict, prefix: str = "") -> dict[str, Any]:
    """Config fields as flat scalars: nested tables as `a.b`, lists as JSON text, None as
    "None" (MLflow params and TensorBoard hparams take text, numbers and bools only)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = (json.dumps(v) if isinstance(v, list | tuple)
                                   else "None" if v is None else v)
    return out


def missing_extra(what: str, extra: str, module: str) -> UserError:
    return UserError(f"export to {what} needs the {module} package: pip install 'mlplab[{extra}]'")


# --- Parquet ---------------------------------------------------------------------------------
def _parquet(runs: list[dict], results: Results, dest, **_) -> dict:
    """The per-epoch long table: Results.history() (run_id, experiment, seed, epoch, metrics)
    with each run's status, architecture, params and config columns (`config.lr` for the
    configured learning rate: `lr` is the epoch's), written atomically."""
    try:
        import pyarrow  # noqa: F401  (pandas' Parquet engine; imported here to name the extra)
    except ImportError:
        raise missing_extra("Parquet", "parquet", "pyarrow") from None
    path = Path(dest)
    if path.is_dir():
        raise UserError(f"--to parquet {dest}: is a folder; give a file name (runs.parquet)")
    runs_df, hist = results.to_pandas(), results.history()
    config_cols = [c for c in runs_df.columns if c not in store.COLUMNS]
    # a config field named like a history column (lr: the base rate; the history's lr is the
    # epoch's rate after the schedule) keeps its name under "config."
    runs_df = runs_df.rename(columns={c: f"config.{c}" for c in config_cols if c in hist.columns})
    config_cols = [f"config.{c}" if c in hist.columns else c for c in config_cols]
    keep = ["run_id", "status", "architecture", "params", *config_cols]
    table = hist.merge(runs_df[keep], on="run_id", how="left")
    buf = io.BytesIO()
    table.to_parquet(buf, engine="pyarrow", index=False)
    store.write_bytes_atomic(path, buf.getvalue())
    return {"to": "parquet", "where": str(path), "exported": len(runs), "skipped": 0,
            "rows": len(table)}


# --- TensorBoard -----------------------------------------------------------------------------
def _tensorboard_writer() -> tuple[type, Callable]:
    """(SummaryWriter, hparams): tensorboardX (0.5 MB, the `tensorboard` extra), else torch's
    own writer, which works where the `tensorboard` package is installed (it records a bool
    hparam as the number 0 or 1)."""
    try:
        from tensorboardX import SummaryWriter
        from tensorboardX.summary import hparams
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError:
            raise missing_extra("TensorBoard", "tensorboard", "tensorboardX") from None
    return SummaryWriter, hparams


def _tensorboard(runs: list[dict], results: Results, dest, **_) -> dict:
    """One folder per run, DEST/<configuration>/seed<N>-<run_id>: every per-epoch metric as a
    scalar (step = epoch), the final metrics as `final/...` scalars at the last epoch, and the
    run's config as an hparams session (TensorBoard's HPARAMS tab). A run whose folder exists
    is skipped. No experiment summary is written: TensorBoard then infers each hparam's type
    and which ones differ from all the sessions, so runs exported later join the same table."""
    writer_cls, hparams = _tensorboard_writer()
    root = Path(dest)
    if root.exists() and not root.is_dir():
        raise UserError(f"--to tensorboard {dest}: exists and is not a folder")
    done = {p.name.rsplit("-", 1)[-1] for p in root.glob("*/seed*-*") if p.is_dir()}
    todo = [r for r in runs if r["run_id"] not in done]
    for r in todo:
        final = root / safe_name(r["name"]) / f"seed{r['seed']}-{r['run_id']}"
        tmp = final.with_name(f".{final.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _write_tensorboard_run(writer_cls, hparams, tmp, r)
            tmp.rename(final)
        except BaseException:  # Ctrl-C, disk full: no half-written run folder is left
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return {"to": "tensorboard", "where": str(root), "exported": len(todo),
            "skipped": len(runs) - len(todo)}


def _write_tensorboard_run(writer_cls: type, hparams: Callable, folder: Path, r: dict) -> None:
    w = writer_cls(str(folder))
    try:
        for h in r["history"]:
            for src, key in EPOCH_METRICS.items():
                if h.get(src) is not None:
                    w.add_scalar(key, float(h[src]), int(h["epoch"]))
        last = int(r["final"]["epochs_run"] or len(r["history"]))
        finals = {f"final/{key}": float(r["final"][src]) for src, key in FINAL_METRICS.items()
                  if r["final"][src] is not None}
        for tag, value in finals.items():
            w.add_scalar(tag, value, last)
        tags = {"mlplab.run_id": r["run_id"], "mlplab.status": r["status"]}
        _, start, end = hparams({**flat_config(r["config"]), **tags}, finals)
        w._get_file_writer().add_summary(start)
        w._get_file_writer().add_summary(end)
    finally:
        w.close()


def safe_name(name: str) -> str:
    """A configuration name as one folder name: letters, digits and ._=,+-[] kept, the rest `_`."""
    s = re.sub(r"[^\w.=,+\-\[\]]", "_", name).lstrip(".")[:120]
    return s or "run"


def _mlflow(runs: list[dict], results: Results, dest, *, tracking_uri=None, experiment=None) -> dict:
    from .tracking_mlflow import export

    return export(runs, experiment=results.name if experiment is None else experiment,
                  folder=Path(results.out).resolve(), tracking_uri=tracking_uri)


EXPORTERS: dict[str, Callable[..., dict]] = {"mlflow": _mlflow, "tensorboard": _tensorboard,
                                             "parquet": _parquet}
