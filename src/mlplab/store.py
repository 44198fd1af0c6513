"""Run store: SQLite at OUT/mlplab.db (WAL; the driver process is its only writer) plus one
folder per finished run, OUT/runs/<run_id>/ (config.json, history.csv, metrics.json,
weights.safetensors, errors.safetensors).

Order of a commit: the folder is written under a temporary name and renamed into place in one
step, then the database row is inserted in one transaction. A crash between the two leaves a
complete folder that `open_store` imports on the next start; a crash before the rename leaves a
temporary folder that is deleted. So a finished run is never lost or recorded twice, and a
half-written run never looks finished. Resume = skip run ids that have a row.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import RunConfig
from .errors import UserError

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
RESULT_FIELDS = ("run_id", "experiment", "architecture", "params", "seed", "epochs_run",
                 "best_epoch", "val_loss", "val_acc", "test_loss", "test_acc", "train_seconds",
                 "status")
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, experiment TEXT NOT NULL, architecture TEXT, params INTEGER,
    seed INTEGER, epochs_run INTEGER, best_epoch INTEGER, val_loss REAL, val_acc REAL,
    test_loss REAL, test_acc REAL, train_seconds REAL, status TEXT NOT NULL, device TEXT,
    finished_at REAL, config TEXT NOT NULL, metrics TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs(run_id), epoch INTEGER NOT NULL, train_loss REAL,
    train_acc REAL, val_loss REAL, val_acc REAL, lr REAL, seconds REAL,
    PRIMARY KEY (run_id, epoch));
"""
# Scalar columns of `runs` a user may filter or sort on (mlplab runs --where/--sort).
COLUMNS = ("run_id", "experiment", "architecture", "params", "seed", "epochs_run", "best_epoch",
           "val_loss", "val_acc", "test_loss", "test_acc", "train_seconds", "status", "device",
           "finished_at")


def prepare_out(out: str | Path) -> Path:
    """Check OUT can be a results folder (validated before anything is trained)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    return path


def run_dir(out: Path, run_id: str) -> Path:
    return Path(out) / "runs" / run_id


def connect(out: Path) -> sqlite3.Connection:
    path = Path(out) / "mlplab.db"
    try:
        db = sqlite3.connect(path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        db.execute("SELECT run_id FROM runs LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        if "disk is full" in str(e):
            raise  # not corrupt: the CLI says "disk full"
        raise UserError(f"{path} is not a readable mlplab store ({e}); every finished run is also "
                        f"in {Path(out) / 'runs'}/: move mlplab.db aside and run again to rebuild "
                        "it from them") from None
    return db


def open_store(out: str | Path) -> sqlite3.Connection:
    """Open (creating) OUT's store for writing: delete temporary leftovers of a crashed run and
    import complete run folders that never reached the database."""
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    db = connect(out)
    for leftover in (out / "runs").glob(".*.tmp*"):
        shutil.rmtree(leftover, ignore_errors=True)
    known = {r[0] for r in db.execute("SELECT run_id FROM runs")}
    for folder in sorted((out / "runs").iterdir()):
        if folder.name in known or not folder.is_dir():
            continue
        if not (folder / "metrics.json").is_file():
            continue  # not a finished run: it is trained again, and its folder replaced then
        run = read_run(folder)
        if run["config"].run_id == folder.name:  # else not ours to import: left untouched
            _insert(db, run["config"], run["history"], run["metrics"])
    db.commit()
    return db


def finished_ids(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT run_id FROM runs")}


def _csv_text(rows: list[dict], fields: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except BaseException:  # disk full, Ctrl-C: no temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def commit_run(db: sqlite3.Connection, out: Path, cfg: RunConfig, history: list[dict],
               metrics: dict, state: dict[str, torch.Tensor],
               extra: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write a finished run's folder atomically, then its database rows in one transaction."""
    final = run_dir(out, cfg.run_id)
    metrics = {**metrics, "finished_at": time.time()}
    tmp = final.with_name(f".{cfg.run_id}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_run_folder(tmp, cfg, history, metrics, state, extra)
    except BaseException:  # disk full, Ctrl-C: no half-written folder is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # an unfinished leftover: it has no database row
        shutil.rmtree(final)
    tmp.rename(final)
    _insert(db, cfg, history, metrics)
    db.commit()
    return final


def _write_run_folder(tmp: Path, cfg: RunConfig, history: list[dict], metrics: dict,
                      state: dict[str, torch.Tensor], extra) -> None:
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
    (tmp / "history.csv").write_text(_csv_text(history, HISTORY_FIELDS))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "weights.safetensors"),
              metadata={"run_id": cfg.run_id})
    for name, tensors in (extra or {}).items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / f"{name}.safetensors"))
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def _insert(db: sqlite3.Connection, cfg: RunConfig, history: list[dict], metrics: dict) -> None:
    row = {c: metrics.get(c) for c in COLUMNS}
    row.update(run_id=cfg.run_id, config=json.dumps(cfg.model_dump(mode="json")),
               metrics=json.dumps(metrics))
    cols = ", ".join(row)
    db.execute(f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    db.executemany(
        "INSERT INTO epochs (run_id, epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(cfg.run_id, int(h["epoch"]), *(h[k] for k in HISTORY_FIELDS[1:])) for h in history])


def read_run(folder: Path) -> dict:
    """config, history rows and metrics of a stored run folder (weights are separate)."""
    try:
        cfg = RunConfig.model_validate_json((folder / "config.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        with open(folder / "history.csv", newline="") as f:
            history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except (OSError, ValueError) as e:
        raise UserError(f"{folder}: not a complete mlplab run folder ({e})") from None
    return {"config": cfg, "history": history, "metrics": metrics}


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file (never pickle); a bad file is a UserError."""
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise UserError(f"{path}: unreadable or corrupt safetensors file ({e})") from None


def read_db(out: str | Path) -> sqlite3.Connection:
    """Open an existing store for reading (reports, queries)."""
    path = Path(out) / "mlplab.db"
    if not path.is_file():
        raise UserError(f"{out}: no mlplab.db here; run `mlplab run SUITE --out {out}` first")
    return connect(Path(out))


def rows(db: sqlite3.Connection, run_ids: list[str] | None = None) -> list[dict]:
    """results rows (dicts with COLUMNS + config + metrics), in finishing order or run_ids order."""
    found = [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY finished_at, run_id")]
    if run_ids is None:
        return found
    by_id = {r["run_id"]: r for r in found}
    return [by_id[i] for i in run_ids if i in by_id]


def snapshot(out: str | Path, run_ids: list[str] | None = None) -> tuple[list[dict], dict[str, list[dict]]]:
    """Rows and per-run histories read in ONE read transaction: a consistent picture while a
    run is committing (WAL readers see the database as of their transaction's start)."""
    db = read_db(out)
    try:
        db.execute("BEGIN")
        found = rows(db, run_ids)
        hist = {r["run_id"]: history(db, r["run_id"]) for r in found}
        db.execute("COMMIT")
    finally:
        db.close()
    return found, hist


def history(db: sqlite3.Connection, run_id: str) -> list[dict]:
    return [dict(r) for r in db.execute(
        "SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,))]


def write_results(out: Path, result_rows: list[dict]) -> Path:
    path = Path(out) / "results.csv"
    write_text_atomic(path, _csv_text(result_rows, RESULT_FIELDS))
    return path


def query(db: sqlite3.Connection, where: tuple[str, ...] = (), sort: str | None = None) -> list[dict]:
    """Runs filtered by `key=value` pairs on COLUMNS or config keys, sorted by a column
    ('-col' for descending)."""
    result = rows(db)
    for cond in where:
        key, sep, value = cond.partition("=")
        if not sep:
            raise UserError(f"--where {cond!r} must be key=value")
        if key not in COLUMNS and key not in RunConfig.model_fields:
            raise UserError(f"--where: unknown key {key!r}; allowed: {', '.join(COLUMNS)} "
                            "or any config key")
        result = [r for r in result if _value(r, key) == value]
    if sort:
        key = sort.lstrip("-")
        if key not in COLUMNS and key not in RunConfig.model_fields:
            raise UserError(f"--sort: unknown key {key!r}; allowed: {', '.join(COLUMNS)}")
        result.sort(key=lambda r: _sortable(r, key), reverse=sort.startswith("-"))
    return result


def _value(row: dict, key: str) -> str:
    v = row[key] if key in COLUMNS else json.loads(row["config"]).get(key)
    return str(v).lower() if isinstance(v, bool) else str(v)


def _sortable(row: dict, key: str):
    v = row[key] if key in COLUMNS else json.loads(row["config"]).get(key)
    if v is None:
        return (1, 0)
    return (0, v.lower() if isinstance(v, str) else v)
