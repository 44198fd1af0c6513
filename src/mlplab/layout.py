"""The results folder (OUT), spelled out in one place: what lies where, and the names that
safefs guards. Every module that reads or writes OUT asks here; none spells these names itself.

    OUT/mlplab.db (+ -wal, -shm, -journal)   the run store (storedb, store)
    OUT/runs/<run_id>/                       one finished run: config.json, history.csv,
                                             metrics.json (written last), weights.safetensors,
                                             errors.safetensors, augmented.safetensors
    OUT/checkpoints/                         groups' epoch checkpoints (checkpoint)
    OUT/results.csv, OUT/search.json         every run of the suite; successive halving's log
    OUT/report.html, report.md, report_files/, plots/, .report-state   the report (report)
    OUT/.mlplab.lock                         one owner per folder (lock)

Torch-free, imports nothing of mlplab.
"""

from __future__ import annotations

from pathlib import Path

DB = "mlplab.db"
RUNS = "runs"
CHECKPOINTS = "checkpoints"
RESULTS_CSV = "results.csv"
SEARCH = "search.json"
PLOTS = "plots"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
REPORT_FILES = "report_files"
STAMP = ".report-state"  # beside the report: the state of the store it shows (report.up_to_date)
LOCK = ".mlplab.lock"

# a run folder's files
CONFIG = "config.json"
HISTORY = "history.csv"
METRICS = "metrics.json"  # written last: it marks a finished run
WEIGHTS = "weights.safetensors"
ERRORS = "errors.safetensors"  # misclassified test images
AUGMENTED = "augmented.safetensors"  # what an augmented network saw

# What a run writes directly in OUT, and the folders whose entries it writes: a link at any of
# them stops a run before it trains (safefs refuses it at the write too).
OUT_NAMES = (DB, f"{DB}-wal", f"{DB}-shm", f"{DB}-journal", RESULTS_CSV, SEARCH, REPORT_HTML,
             REPORT_MD, PLOTS, REPORT_FILES)
OUT_FOLDERS = (RUNS, CHECKPOINTS)
# What a report writes into its folder (OUT or --to DIR), and the folders among them.
REPORT_NAMES = (REPORT_HTML, REPORT_MD, PLOTS, REPORT_FILES, STAMP)
REPORT_FOLDERS = (PLOTS, REPORT_FILES)


def _at(name: str):
    """The path of `name` directly in a results folder (OUT or a report's --to folder)."""
    def path(out: str | Path) -> Path:
        return Path(out) / name
    path.__name__ = path.__qualname__ = name.strip(".").replace(".", "_").replace("-", "_")
    return path


db, runs, checkpoints, results_csv, search = map(_at, (DB, RUNS, CHECKPOINTS, RESULTS_CSV, SEARCH))
plots, report_html, report_md, report_files = map(_at, (PLOTS, REPORT_HTML, REPORT_MD, REPORT_FILES))
stamp, lock = _at(STAMP), _at(LOCK)


def run(out: str | Path, run_id: str) -> Path:
    """A run's folder: OUT/runs/<run_id>."""
    return Path(out) / RUNS / run_id


def out_of(run_folder: str | Path) -> Path:
    """The results folder that holds a run folder (the inverse of `run`)."""
    return Path(run_folder).parent.parent
