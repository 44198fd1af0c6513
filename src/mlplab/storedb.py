"""Opening the run store's SQLite database: the writer's connection (WAL, creates the schema)
and the readers' (read-only, so a query never writes; immutable on read-only media, where
SQLite could not even create its lock files). A store is called corrupt only when SQLite's
integrity check fails; a locked or read-only one gets its own line (errors.sqlite_message).
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from pathlib import Path

from . import layout, safefs
from .errors import UserError, sqlite_kind, sqlite_message

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

def connect(out: Path) -> sqlite3.Connection:
    """The writer's connection (creates the store): WAL, one writer."""
    path = layout.db(out)
    try:
        db = sqlite3.connect(path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        db.execute("SELECT run_id FROM runs LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        raise _store_error(e, path) from None
    return db


def _store_error(e: sqlite3.DatabaseError, path: Path) -> Exception:
    """The error to raise for a store that failed to open: disk full as itself (the CLI says
    "disk full"), corrupt only when an integrity check says so, else its own one line."""
    kind = sqlite_kind(e)
    if kind == "full":
        return e
    if "no such table" in str(e):  # an SQLite file, not ours
        return UserError(f"{path} is an SQLite database but not an mlplab store ({e})")
    if kind in ("corrupt", "other") and not _healthy(path):
        return UserError(f"{path} is not a readable mlplab store ({e}); every finished run is also "
                         f"in {layout.runs(path.parent)}/: move {layout.DB} aside and run again to "
                         "rebuild it from them")
    return UserError(sqlite_message(e, path))


def _healthy(path: Path) -> bool:
    """Whether the database file passes SQLite's quick integrity check (read-only, immutable:
    the check itself writes nothing)."""
    try:
        db = sqlite3.connect(_ro_uri(path, immutable=True), uri=True)
        try:
            return db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return False


def _ro_uri(path: Path, immutable: bool) -> str:
    return (f"file:{urllib.parse.quote(str(Path(path).absolute()))}?mode=ro"
            + ("&immutable=1" if immutable else ""))


def read_db(out: str | Path) -> sqlite3.Connection:
    """Open an existing store for reading (reports, queries): read-only, so a query never
    writes, and immutable where the folder cannot be written (read-only media)."""
    path = layout.db(out)
    if os.path.islink(path):
        raise safefs.link_error(path)
    if not path.is_file():
        raise UserError(f"{out}: no {layout.DB} here; run `mlplab run SUITE --out {out}` first")
    immutable = not os.access(path.parent, os.W_OK)
    try:
        db = sqlite3.connect(_ro_uri(path, immutable), uri=True, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("SELECT run_id FROM runs LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        raise _store_error(e, path) from None
    return db
