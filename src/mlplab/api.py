"""The Python API: `run` a suite, `load` a results folder, and `Results` / `Run` to look at what was
trained as pandas DataFrames, matplotlib Figures and models that predict.

    import mlplab
    r = mlplab.run("seed", seeds=3)        # a built-in name, a TOML path, a dict or a mlplab.Suite
    r.table()                              # one row per configuration: mean ± std, n, Welch p, rank
    r.to_pandas(); r.history()             # one row per run; one row per run and epoch
    r.plot_curves(); r.best().predict(x)
    mlplab.load(["study-a", "study-b"]).table()   # two studies compared, configurations matched

Everything reads the run store (SQLite + run folders), the same one the CLI writes, so a folder
written by `mlplab run` loads here and the other way round.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError
from .inputs import check_names, check_path, check_run_options
from .interrupt import for_call
from .progress import progress_view
from .suite import Suite, apply_overrides, load_suite, parse_suite

if TYPE_CHECKING:  # imported where used: `mlplab run --help` and `mlplab list` never load torch
    from .results import Results

__all__ = ["as_suite", "load", "run"]


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
        cluster: str | None = None, security=None, checkpoint_every: float | None = 60.0,
        _own_interrupt: bool = False) -> Results:
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
    written. (`_own_interrupt`: the caller says what an interrupt saved itself, in its own
    words: the CLI's "run the same command again".)"""
    from . import sweep  # torch: only when training
    from .results import Results

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
                if _own_interrupt:
                    raise
                raise for_call(e, view, temporary) from None
    except BaseException:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return Results(folder, [r["run_id"] for r in rows], name=s.name, temporary=temporary, suite=s)


def load(out: str | Path | list[str | Path], experiments: list[str] | None = None) -> Results:
    """The Results stored in a results folder (written by `mlplab run` or `mlplab.run`), or in a
    list of folders compared as one: the same configuration in two folders is one row of
    `table()` (its `folders` column says where), `to_pandas()`'s `folder` column says where each
    run came from. experiments: only these configurations (names as in `table()`)."""
    from .results import Results

    res = Results(out)
    if experiments:
        res = res.filter(experiments)
    return res


def __getattr__(name: str):
    """`from mlplab.api import Results, Run` as before: imported on first use (they load torch)."""
    if name == "Results":
        from .results import Results

        return Results
    if name == "Run":
        from .trained import Run

        return Run
    raise AttributeError(f"module 'mlplab.api' has no attribute {name!r}")
