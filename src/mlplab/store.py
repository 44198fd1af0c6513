"""Run store: one folder per finished run, and OUT/results.csv.

OUT/runs/<run_id>/ holds config.json, history.csv, metrics.json and weights.safetensors. A run
folder is written under a temporary name and renamed into place in one step, so a crash never
leaves a half-written run that looks finished; resume = skip run ids whose folder exists.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import RunConfig
from .errors import UserError

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
RESULT_FIELDS = ("run_id", "experiment", "architecture", "params", "seed", "epochs_run",
                 "best_epoch", "val_loss", "val_acc", "test_loss", "test_acc", "train_seconds",
                 "status")


def prepare_out(out: str | Path) -> Path:
    """Check OUT can be a results folder (validated before anything is trained)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    return path


def run_dir(out: Path, run_id: str) -> Path:
    return out / "runs" / run_id


def is_finished(out: Path, run_id: str) -> bool:
    return (run_dir(out, run_id) / "metrics.json").is_file()


def _csv_text(rows: list[dict], fields: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def write_run(out: Path, cfg: RunConfig, history: list[dict], metrics: dict,
              state: dict[str, torch.Tensor]) -> Path:
    """Write a finished run's folder atomically; returns its path."""
    final = run_dir(out, cfg.run_id)
    tmp = final.with_name(f".{cfg.run_id}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
    (tmp / "history.csv").write_text(_csv_text(history, HISTORY_FIELDS))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "weights.safetensors"),
              metadata={"run_id": cfg.run_id})
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if final.exists():  # an unfinished leftover (no metrics.json) from a crash
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def read_run(folder: Path) -> dict:
    """config, history rows and metrics of a stored run (weights are loaded separately)."""
    try:
        cfg = RunConfig.model_validate_json((folder / "config.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        with open(folder / "history.csv", newline="") as f:
            history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except (OSError, ValueError) as e:
        raise UserError(f"{folder}: not a complete mlplab run folder ({e})") from None
    return {"config": cfg, "history": history, "metrics": metrics}


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(folder / "weights.safetensors"))
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise UserError(f"{folder}/weights.safetensors: unreadable or corrupt ({e})") from None


def write_results(out: Path, rows: list[dict]) -> Path:
    path = out / "results.csv"
    write_text_atomic(path, _csv_text(rows, RESULT_FIELDS))
    return path


def result_row(folder: Path) -> dict:
    """One results.csv row from a run folder."""
    m = json.loads((folder / "metrics.json").read_text())
    return {k: m.get(k) for k in RESULT_FIELDS}
