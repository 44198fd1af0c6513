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

import contextlib
import csv
import io
import json
import logging
import os
import sqlite3
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from . import layout, safefs
from .config import RunConfig
from .errors import UserError, sqlite_kind
from .layout import OUT_FOLDERS, OUT_NAMES
from .records import COLUMNS, HISTORY_FIELDS, RESULT_FIELDS, RunRecord
from .safetext import csv_cell, printable
from .storedb import SCHEMA, connect, read_db  # noqa: F401  (re-exported)

log = logging.getLogger("mlplab")

__all__ = ["COLUMNS", "HISTORY_FIELDS", "RESULT_FIELDS", "SCHEMA", "connect", "read_db"]


def prepare_out(out: str | Path) -> Path:
    """Check OUT can be a results folder (validated before anything is trained)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"out {out}: exists and is not a folder")
    return path


run_dir = layout.run  # OUT/runs/<run_id>


def open_store(out: str | Path) -> sqlite3.Connection:
    """Open (creating) OUT's store for writing: refuse links planted in OUT, delete temporary
    leftovers of a crashed run (and of killed checkpoint writes), and import complete run
    folders that never reached the database (a damaged one is skipped with a warning)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    safefs.refuse_links(out, OUT_NAMES, OUT_FOLDERS)
    with safefs.folder(out) as fd:
        safefs.remove_temporaries(fd)  # results.csv, search.json, … of a killed process
    with safefs.folder(out, (layout.RUNS,)) as fd:
        db = connect(out)
        safefs.remove_temporaries(fd, any_pid=True)  # the caller holds OUT's lock
        if os.path.isdir(layout.checkpoints(out)):
            with safefs.folder(out, (layout.CHECKPOINTS,)) as ck:
                safefs.remove_temporaries(ck, any_pid=True)
            with contextlib.suppress(OSError):
                os.rmdir(layout.checkpoints(out))  # only when nothing is left in it
        known = finished_ids(db)
        for name in sorted(os.listdir(fd)):
            if name not in known and not name.startswith("."):
                _import(db, layout.run(out, name))
    return db


def _import(db: sqlite3.Connection, folder: Path) -> None:
    """Import a complete run folder that missed the database; a damaged one is skipped with a
    warning (it is trained again if the suite asks for it), never blocking the others."""
    if not folder.is_dir() or not (folder / layout.METRICS).is_file():
        return  # not a finished run: it is trained again, and its folder replaced then
    try:
        run = read_run(folder)
        if run["config"].run_id != folder.name:
            return  # not ours to import: left untouched
        _insert(db, run["config"], run["history"], run["metrics"])
        db.commit()
    except (UserError, sqlite3.Error, OverflowError, ValueError, TypeError, KeyError) as e:
        db.rollback()
        if sqlite_kind(e) == "full":
            raise
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        log.warning("%s", printable(f"skipped run folder {folder} (cannot import it: {why}); it is "
                                    "trained again if a suite asks for it"))


def finished_ids(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT run_id FROM runs")}


def _csv_text(rows: list[dict], fields: tuple[str, ...]) -> str:
    buf = io.StringIO()
    write_csv(buf, rows, fields)
    return buf.getvalue()


def write_csv(stream, rows: list[dict], fields: tuple[str, ...]) -> None:
    """CSV of `rows` whose text cells no spreadsheet runs as a formula (safetext.csv_cell)."""
    w = csv.DictWriter(stream, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows({k: csv_cell(r.get(k)) for k in fields} for r in rows)


def write_bytes_atomic(path: Path, data: bytes, root: Path | None = None) -> None:
    """Write via a temporary file and rename: readers never see a half-written file; no link
    below `root` (default: the file's folder) is followed (safefs)."""
    safefs.write_atomic(path, data, root)


def write_text_atomic(path: Path, text: str, root: Path | None = None) -> None:
    write_bytes_atomic(path, text.encode(), root)


def commit_run(db: sqlite3.Connection, out: Path, cfg: RunConfig, history: list[dict],
               metrics: dict, state: dict[str, torch.Tensor],
               extra: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write a finished run's folder atomically, then its database rows in one transaction. A
    failed insert (a value SQLite cannot hold, a full disk) removes the folder again: a folder
    without its row never blocks a later run."""
    final = layout.run(out, cfg.run_id)
    metrics = {**metrics, "finished_at": time.time()}
    tmp = f".{cfg.run_id}.tmp{os.getpid()}"
    with safefs.folder(out, (layout.RUNS,)) as runs:
        safefs.remove(runs, tmp)
        try:
            os.mkdir(tmp, dir_fd=runs)
            with safefs.folder(final.parent, (tmp,), create=False) as fd:
                _write_run_folder(fd, final.parent / tmp, cfg, history, metrics, state, extra)
            if os.path.islink(final):
                raise safefs.link_error(final)
            safefs.remove(runs, cfg.run_id)  # an unfinished leftover: it has no database row
            os.rename(tmp, cfg.run_id, src_dir_fd=runs, dst_dir_fd=runs)
        except BaseException:  # disk full, Ctrl-C: no half-written folder is left behind
            safefs.remove(runs, tmp)
            raise
        try:
            _insert(db, cfg, history, metrics)
            db.commit()
        except BaseException:
            db.rollback()
            safefs.remove(runs, cfg.run_id)
            raise
    return final


def _write_run_folder(fd: int, tmp: Path, cfg: RunConfig, history: list[dict], metrics: dict,
                      state: dict[str, torch.Tensor], extra) -> None:
    def put(name: str, data: bytes) -> None:
        safefs.write_new(fd, name, data, tmp / name)

    put(layout.CONFIG, (json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n").encode())
    put(layout.HISTORY, _csv_text(history, HISTORY_FIELDS).encode())
    put(layout.WEIGHTS, save({k: v.contiguous() for k, v in state.items()},
                                    metadata={"run_id": cfg.run_id}))
    for name, tensors in (extra or {}).items():
        put(name, save({k: v.contiguous() for k, v in tensors.items()}))
    put(layout.METRICS, (json.dumps(metrics, indent=2) + "\n").encode())  # last: it marks a finished run


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
        cfg = RunConfig.model_validate_json((folder / layout.CONFIG).read_text())
        metrics = json.loads((folder / layout.METRICS).read_text())
        with open(folder / layout.HISTORY, newline="") as f:
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


def rows(db: sqlite3.Connection, run_ids: list[str] | None = None) -> list[dict]:
    """The `runs` table's rows as dicts (COLUMNS + config and metrics as JSON text), in finishing
    order or run_ids order: what the driver needs (status, epochs). Results read `snapshot`."""
    found = [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY finished_at, run_id")]
    if run_ids is None:
        return found
    by_id = {r["run_id"]: r for r in found}
    return [by_id[i] for i in run_ids if i in by_id]


def snapshot(out: str | Path, run_ids: list[str] | None = None) -> list[RunRecord]:
    """OUT's runs as records, each with its history, read in ONE read transaction: a consistent
    picture while a run is committing (WAL readers see the database as of their transaction's
    start)."""
    db = read_db(out)
    try:
        db.execute("BEGIN")
        found = [RunRecord.from_row(r, history(db, r["run_id"])) for r in rows(db, run_ids)]
        db.execute("COMMIT")
    finally:
        db.close()
    return found


def history(db: sqlite3.Connection, run_id: str) -> list[dict]:
    return [dict(r) for r in db.execute(
        "SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,))]


def write_results(out: Path, result_rows: list[dict]) -> Path:
    path = layout.results_csv(out)
    write_text_atomic(path, _csv_text(result_rows, RESULT_FIELDS), root=Path(out))
    return path


def query(db: sqlite3.Connection, where: tuple[str, ...] = (), sort: str | None = None) -> list[RunRecord]:
    """Runs filtered by `key=value` pairs on COLUMNS or config keys, sorted by a column
    ('-col' for descending)."""
    result = [RunRecord.from_row(r) for r in rows(db)]
    for cond in where:
        key, sep, value = cond.partition("=")
        if not sep:
            raise UserError(f"--where {cond!r} must be key=value")
        if key not in COLUMNS and key not in RunConfig.model_fields:
            raise UserError(f"--where: unknown key {key!r}; allowed: {', '.join(COLUMNS)} "
                            "or any config key")
        result = [r for r in result if _text(r.value(key)) == value]
    if sort:
        key = sort.lstrip("-")
        if key not in COLUMNS and key not in RunConfig.model_fields:
            raise UserError(f"--sort: unknown key {key!r}; allowed: {', '.join(COLUMNS)}")
        result.sort(key=lambda r: _sortable(r.value(key)), reverse=sort.startswith("-"))
    return result


def _text(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _sortable(v):
    if v is None:
        return (2, 0)
    if isinstance(v, int | float):  # numbers before text; a list (per-layer stddevs) as its JSON
        return (0, v)
    return (1, v.lower() if isinstance(v, str) else json.dumps(v))
