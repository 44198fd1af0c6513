"""MLflow export: one MLflow experiment (by default named after the suite), one parent run for the
results folder, and every mlplab run as a child run nested under it (`mlflow.parentRunId`): its
config as params, its per-epoch metrics with step = epoch, its final metrics, and tags
`mlplab.run_id`, `mlplab.status`, `mlplab.seed`, `mlplab.experiment` (`mlplab.pruned_at` for a
run successive halving stopped).

Idempotent: a run is looked up by its `mlplab.run_id` tag in the experiment and skipped when it is
there and FINISHED; one left RUNNING by an interrupted export is deleted and written again. A child
run is created, filled in one batch, then marked FINISHED.

MLflow is imported with its usage telemetry off unless the user set MLFLOW_DISABLE_TELEMETRY
themselves: exporting to a local database must not talk to any other host.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError
from .exported import EPOCH_METRICS, FINAL_METRICS, flat_config, missing_extra
from .records import RunRecord

MAX_EXPERIMENT_NAME = 500  # MLflow's limit (mlflow.utils.validation.MAX_EXPERIMENT_NAME_LENGTH)
PAGE = 1000


@contextmanager
def _telemetry_off():
    """MLFLOW_DISABLE_TELEMETRY=true while mlplab uses MLflow, unless the user chose a value."""
    chosen = "MLFLOW_DISABLE_TELEMETRY" in os.environ
    if not chosen:
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    try:
        yield
    finally:
        if not chosen:
            os.environ.pop("MLFLOW_DISABLE_TELEMETRY", None)


def export(runs: list[RunRecord], *, experiment: str, folder: Path, tracking_uri: str | None) -> dict:
    """Write `runs` to MLflow; what was done (see tracking.export_runs)."""
    if not experiment.strip() or len(experiment) > MAX_EXPERIMENT_NAME:
        raise UserError(f"experiment: an MLflow experiment name is 1 to {MAX_EXPERIMENT_NAME} "
                        f"characters, got {len(experiment.strip())}")
    with _telemetry_off():
        try:
            from mlflow import MlflowClient
            from mlflow.exceptions import MlflowException
        except ImportError:
            raise missing_extra("MLflow", "mlflow", "mlflow-skinny") from None
        try:
            client = MlflowClient(tracking_uri=tracking_uri)
            return _export(client, runs, experiment, folder)
        except MlflowException as e:
            uri = tracking_uri or "MLflow's default tracking URI"
            raise UserError(f"MLflow ({uri}): {e.message}") from None
        except ImportError as e:  # mlflow-skinny without SQLAlchemy asked for a sqlite:// store
            raise UserError(f"MLflow's database store needs {e.name or 'SQLAlchemy'}: "
                            "pip install 'mlplab[mlflow]'") from None


def _export(client, runs: list[RunRecord], name: str, folder: Path) -> dict:
    exp_id = _experiment(client, name)
    existing, parent = _existing(client, exp_id, str(folder))
    todo = [r for r in runs if r.run_id not in existing]
    if parent is None and todo:  # (none when every run is there already, from another folder)
        parent = client.create_run(exp_id, run_name=name, start_time=_ms(min(_start(r) for r in runs)),
                                   tags={"mlplab.folder": str(folder), "mlplab.role": "suite"}).info
    for r in todo:
        _log_run(client, exp_id, parent.run_id, str(folder), r)
    if todo:
        end = max([_ms(r.finished_at or time.time()) for r in runs] + [parent.end_time or 0])
        client.set_terminated(parent.run_id, "FINISHED", end_time=end)
    return {"to": "mlflow", "where": client.tracking_uri, "experiment": name, "experiment_id": exp_id,
            "parent_run_id": parent and parent.run_id, "exported": len(todo),
            "skipped": len(runs) - len(todo)}


def _experiment(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, tags={"mlplab": "true"})
    if exp.lifecycle_stage != "active":
        raise UserError(f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments "
                        "restore) or export with --experiment OTHER")
    return exp.experiment_id


def _existing(client, exp_id: str, folder: str):
    """({mlplab run id: MLflow run} of the finished runs there, this folder's parent run or None);
    a run an interrupted export left unfinished is deleted, to be written again."""
    found, parent, token = {}, None, None
    while True:
        page = client.search_runs([exp_id], max_results=PAGE, page_token=token)
        for run in page:
            tags = run.data.tags
            if tags.get("mlplab.role") == "suite" and tags.get("mlplab.folder") == folder:
                parent = run.info
            elif "mlplab.run_id" in tags:
                if run.info.status == "FINISHED":
                    found[tags["mlplab.run_id"]] = run
                else:
                    client.delete_run(run.info.run_id)
        token = page.token
        if not token:
            return found, parent


def _log_run(client, exp_id: str, parent_id: str, folder: str, r: RunRecord) -> None:
    from mlflow.entities import Metric, Param

    tags = {"mlflow.parentRunId": parent_id, "mlplab.run_id": r.run_id, "mlplab.status": r.status,
            "mlplab.seed": str(r.seed), "mlplab.experiment": r.experiment, "mlplab.folder": folder,
            "mlplab.device": str(r.device)}
    if r.pruned_at is not None:
        tags["mlplab.pruned_at"] = str(r.pruned_at)
    start = _start(r)
    run = client.create_run(exp_id, run_name=f"{r.experiment} seed {r.seed}", start_time=_ms(start),
                            tags=tags)
    metrics, t = [], start
    for h in r.history:  # timestamps: the run's start plus each epoch's own duration
        t += h.get("seconds") or 0.0
        metrics += [Metric(key, float(h[src]), _ms(t), int(h["epoch"]))
                    for src, key in EPOCH_METRICS.items() if h.get(src) is not None]
    end = _ms(r.finished_at or t)
    last = int(r.epochs_run or len(r.history))
    metrics += [Metric(key, float(getattr(r, src)), end, last)
                for src, key in FINAL_METRICS.items() if getattr(r, src) is not None]
    limit = _param_limit()
    params = [Param(k, _cut(str(v), limit)) for k, v in flat_config(dict(r.settings)).items()]
    client.log_batch(run.info.run_id, metrics=metrics, params=params)  # MLflow splits big batches
    client.set_terminated(run.info.run_id, "FINISHED", end_time=end)


def _start(r: RunRecord) -> float:
    """When a run started: finished_at less its (group's) training time."""
    return (r.finished_at or time.time()) - (r.train_seconds or 0.0)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _param_limit() -> int:
    """The installed client's longest param value (6000 in MLflow 3; 500 in old versions)."""
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:
        return 500
    return MAX_PARAM_VAL_LENGTH


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
