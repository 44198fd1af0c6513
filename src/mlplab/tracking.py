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
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from . import records, store, tracking_mlflow
from .errors import UserError
from .exported import EPOCH_METRICS, FINAL_METRICS, flat_config, missing_extra  # noqa: F401
from .records import RunRecord


def export_runs(runs: list[RunRecord], to: str, dest: str | Path | None = None, *, folder: Path,
                name: str, tracking_uri: str | None = None, experiment: str | None = None) -> dict:
    """Export `runs` (a Results' records; `folder`: their results folder, `name`: the Results'
    name) `to` "mlflow", "tensorboard" (dest: a folder) or "parquet" (dest: a file). MLflow:
    tracking_uri (default: MLflow's own, MLFLOW_TRACKING_URI or sqlite:///mlflow.db) and
    experiment (default: name). Returns what was done: to, where, exported, skipped (already
    there) and, for MLflow, experiment_id and parent_run_id."""
    if to not in EXPORTERS:
        raise UserError(f"to {to!r}: not a target; allowed: {', '.join(EXPORTERS)}")
    if to == "mlflow" and dest is not None:
        raise UserError("export to mlflow writes to a tracking server or database, not to dest (DEST): "
                        "give tracking_uri (the CLI's --tracking-uri)")
    if to != "mlflow":
        if dest is None:
            raise UserError(f"export to {to} needs dest (the CLI's DEST): the "
                            f"{'folder' if to == 'tensorboard' else 'file'} to write")
        if tracking_uri is not None or experiment is not None:
            raise UserError("tracking_uri and experiment (--tracking-uri, --experiment) apply only "
                            "to the mlflow target")
    if not runs:
        raise UserError(f"{folder}: no runs to export")
    if to == "mlflow":
        return tracking_mlflow.export(runs, experiment=name if experiment is None else experiment,
                                      folder=Path(folder).resolve(), tracking_uri=tracking_uri)
    return EXPORTERS[to](runs, dest)


# --- Parquet ---------------------------------------------------------------------------------
def _parquet(runs: list[RunRecord], dest) -> dict:
    """The per-epoch long table: Results.history() (run_id, experiment, seed, epoch, metrics)
    with each run's status, architecture, params and config columns (`config.lr` for the
    configured learning rate: `lr` is the epoch's), written atomically."""
    try:
        import pyarrow  # noqa: F401  (pandas' Parquet engine; imported here to name the extra)
    except ImportError:
        raise missing_extra("Parquet", "parquet", "pyarrow") from None
    path = Path(dest)
    if path.is_dir():
        raise UserError(f"to parquet {dest}: is a folder; give a file name (runs.parquet)")
    runs_df, hist = records.run_frame(runs), records.history_frame(runs)
    config_cols = [c for c in runs_df.columns if c not in records.COLUMNS]
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


def _tensorboard(runs: list[RunRecord], dest) -> dict:
    """One folder per run, DEST/<configuration>/seed<N>-<run_id>: every per-epoch metric as a
    scalar (step = epoch), the final metrics as `final/...` scalars at the last epoch, and the
    run's config as an hparams session (TensorBoard's HPARAMS tab). A run whose folder exists
    is skipped. No experiment summary is written: TensorBoard then infers each hparam's type
    and which ones differ from all the sessions, so runs exported later join the same table."""
    writer_cls, hparams = _tensorboard_writer()
    root = Path(dest)
    if root.exists() and not root.is_dir():
        raise UserError(f"to tensorboard {dest}: exists and is not a folder")
    done = {p.name.rsplit("-", 1)[-1] for p in root.glob("*/seed*-*") if p.is_dir()}
    todo = [r for r in runs if r.run_id not in done]
    for r in todo:
        final = root / safe_name(r.experiment) / f"seed{r.seed}-{r.run_id}"
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


def _write_tensorboard_run(writer_cls: type, hparams: Callable, folder: Path, r: RunRecord) -> None:
    w = writer_cls(str(folder))
    try:
        for h in r.history:
            for src, key in EPOCH_METRICS.items():
                if h.get(src) is not None:
                    w.add_scalar(key, float(h[src]), int(h["epoch"]))
        last = int(r.epochs_run or len(r.history))
        finals = {f"final/{key}": float(getattr(r, src)) for src, key in FINAL_METRICS.items()
                  if getattr(r, src) is not None}
        for tag, value in finals.items():
            w.add_scalar(tag, value, last)
        tags = {"mlplab.run_id": r.run_id, "mlplab.status": r.status}
        _, start, end = hparams({**flat_config(dict(r.settings)), **tags}, finals)
        w._get_file_writer().add_summary(start)
        w._get_file_writer().add_summary(end)
    finally:
        w.close()


def safe_name(name: str) -> str:
    """A configuration name as one folder name: letters, digits and ._=,+-[] kept, the rest `_`."""
    s = re.sub(r"[^\w.=,+\-\[\]]", "_", name).lstrip(".")[:120]
    return s or "run"


EXPORTERS: dict[str, Callable[..., dict] | None] = {"mlflow": None, "tensorboard": _tensorboard,
                                                    "parquet": _parquet}  # mlflow: tracking_mlflow
