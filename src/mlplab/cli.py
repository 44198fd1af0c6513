"""The command line: the only module that reads argv or prints. Each command calls one library
function; a UserError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import os
import sys

# The command is our own process: before torch (and its OpenMP) loads, let a thread that waits
# for the others sleep instead of spinning. On a machine where other work holds a core, spinning
# made each op wait for a time slice: one 784x512 matmul of a 2-member group took 11-16 ms with
# 2 threads against 2.4 ms with 1 thread or with this (measured with one CPU-bound process
# beside it); it changes no result. The library leaves the user's process as it is.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import inspect

import click
from rich.markup import escape
from rich.table import Table

from . import api, layout
from .cli_common import console, err_console, not_nan, print_table
from .cli_data import data_cmd
from .cli_models import export_cmd, export_runs_cmd, predict_cmd, reproduce_cmd
from .cluster import tls_security
from .errors import UserError, environment_error
from .inputs import DEVICES
from .interrupt import COMMAND, Interrupted, terminate_as_interrupt, terminated
from .safetext import printable
from .suite import apply_overrides, builtin_suites, load_suite

# The modules that load torch and matplotlib (store, report, figures, summary) are imported in the
# commands that use them: `mlplab --help`, `list` and a mistyped flag answer in a fraction of a
# second instead of after torch's import.

# One set of defaults: the Python API's (the CLI's OUT is a folder named out, never a temporary one).
DEFAULTS = {k: p.default for k, p in inspect.signature(api.run).parameters.items()}


@click.group()
@click.version_option(package_name="mlplab")
def cli() -> None:
    """Build, train and compare MLP architectures on MNIST-style data."""


@cli.command("list")
def list_cmd() -> None:
    """List the built-in suites."""
    table = Table("suite", "configurations × seeds = runs", "description")
    for name, path in sorted(builtin_suites().items()):
        suite = load_suite(str(path))
        n, k = len(suite.runs()), len(suite.seeds)
        how = f" ({suite.search.method}{', halving' * (suite.search.method == 'random' and suite.prunes)})" \
            if suite.search and suite.search.method != "grid" else ""
        table.add_row(name, f"{n} × {k} = {n * k}{how}", escape(suite.description))
    console.print(table)


@cli.command()
@click.argument("suite", default=DEFAULTS["suite"])
@click.option("--out", "out", default="out", show_default=True, type=click.Path(),
              help="results folder (runs/, results.csv, plots/)")
@click.option("--epochs", type=click.IntRange(min=1), help="override every experiment's epochs")
@click.option("--seeds", type=click.IntRange(min=1), help="number of seeds (0..N-1) per configuration")
@click.option("--only", multiple=True, help="run only this experiment (repeatable)")
@click.option("--device", default=DEFAULTS["device"], show_default=True, type=click.Choice(DEVICES))
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
              help="folder with the dataset's four IDX files")
@click.option("--cluster", help="Dask scheduler address (tcp://HOST:8786): train the groups there")
@click.option("--workers", type=click.IntRange(min=1),
              help="start a local Dask cluster of N worker processes")
@click.option("--checkpoint-every", default=DEFAULTS["checkpoint_every"], show_default=True,
              type=click.FloatRange(min=0), callback=not_nan,
              help="seconds between a group's epoch checkpoints (0: every epoch, inf: only at "
                   "halving rungs)")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False),
              help="CA certificate (PEM) of a tls:// Dask scheduler")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="client certificate (PEM)")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="client private key (PEM)")
def run(suite, out, epochs, seeds, only, device, data_dir, cluster, workers, checkpoint_every,
        tls_ca, tls_cert, tls_key) -> None:
    """Train every configuration of SUITE (built-in name or TOML file) and compare them."""
    security = tls_security(tls_ca, tls_cert, tls_key)
    try:
        with terminate_as_interrupt():  # SIGTERM saves as Ctrl-C does
            res = api.run(suite, out, epochs=epochs, seeds=seeds, only=list(only) or None,
                          device=device, data_dir=data_dir, cluster=cluster, workers=workers,
                          security=security, checkpoint_every=checkpoint_every, _own_interrupt=True)
    except KeyboardInterrupt as e:  # here, before click turns it into Abort (and a blank line)
        _interrupted(e)
    # The folder is the unit: `run` and `report` show the same table, of every run in OUT.
    paths = _report_and_table(out, f"suite {res.name}: {len(res)} runs", keep=True)
    search = res.search() if res.suite.prunes else None
    if search:
        from .figures import budget_text

        console.print(f"successive halving: {budget_text(search)}", highlight=False)
    console.print(f"results: {layout.results_csv(out)}   plots: {layout.plots(out)}/   "
                  f"report: {paths['html']}")


@cli.command("report")
@click.argument("out", type=click.Path())
@click.option("--to", "to", type=click.Path(file_okay=False),
              help="folder to write the report into (default: OUT; for a read-only OUT)")
def report_cmd(out, to) -> None:
    """Write OUT/report.html and OUT/report.md from the run store (works on old results)."""
    paths = _report_and_table(out, "", to)
    console.print(f"report: {paths['html']}  {paths['md']}", markup=False, highlight=False)
    for note in paths.get("notes", ()):
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


def _report_and_table(out, what: str, to=None, keep: bool = False) -> dict:
    """Write OUT's report and print its comparison table (both of every run in OUT). keep: a
    report that already shows the store as it is stays (a rerun that trained nothing)."""
    from . import compare, store
    from .report import up_to_date, write_report

    if keep and to is None and up_to_date(out):
        paths = {"html": layout.report_html(out), "md": layout.report_md(out), "notes": []}
    else:
        paths = write_report(out, to=to)
    runs = store.snapshot(out)
    print_table(compare.comparison(runs), f"{out}: {len(runs)} runs" + (f" ({what})" if what else ""))
    return paths


@cli.command()
@click.argument("out", type=click.Path())
@click.option("--where", multiple=True, help="key=value on a result column or config key")
@click.option("--sort", help="column to sort by; prefix with - for descending")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
def runs(out, where, sort, fmt) -> None:
    """Query the run store of OUT (read-only: works on read-only media, never writes)."""
    import json

    from . import store

    db = store.read_db(out)
    found = store.query(db, tuple(where), sort)
    db.close()
    if fmt == "json":
        print(json.dumps([r.columns() | {"config": dict(r.settings)} for r in found], indent=2))
    elif fmt == "csv":  # text cells neutralised against spreadsheet formulas
        store.write_csv(sys.stdout, [r.columns() for r in found], store.COLUMNS)
    else:  # names are data (maybe someone else's folder): no control character reaches the terminal
        def cell(v, f="{}"):
            return escape(printable(f.format(v) if isinstance(v, int | float) else v))

        table = Table(*("run_id", "experiment", "seed", "epochs", "val_acc", "test_acc",
                        "status"), title=f"{len(found)} runs")
        for r in found:
            table.add_row(cell(r.run_id), cell(r.experiment), cell(r.seed), cell(r.epochs_run),
                          cell(r.val_acc, "{:.4f}"), cell(r.test_acc, "{:.4f}"), cell(r.status))
        console.print(table)


SUMMARY_MAX = 12  # configurations printed by `summary`; a big grid says how many more


@cli.command()
@click.argument("suite")
@click.option("--only", multiple=True, help="only this experiment (repeatable)")
def summary(suite, only) -> None:
    """Keras-style model summary of each configuration of SUITE."""
    from .summary import param_counts, summary_rows

    s = apply_overrides(load_suite(suite), only=tuple(only))
    runs = s.runs()
    for cfg in runs[:SUMMARY_MAX]:
        table = Table(title=escape(f'Model: "{cfg.name}"  ({cfg.architecture})'),
                      title_justify="left")
        table.add_column("Layer (type)")
        table.add_column("Output Shape")
        table.add_column("Param #", justify="right")
        table.add_column("Initializer")
        for layer, shape, params, _, init in summary_rows(cfg):
            table.add_row(layer, shape, f"{params:,}", init)
        console.print(table)
        total, trainable, frozen = param_counts(cfg)
        console.print(f"Total params: {total:,}\nTrainable params: {trainable:,}\n"
                      f"Non-trainable params: {frozen:,}\n", highlight=False)
    if len(runs) > SUMMARY_MAX:
        console.print(f"… and {len(runs) - SUMMARY_MAX:,} more configurations ({len(runs):,} in all); "
                      "show one experiment with --only NAME", highlight=False)


for command in (predict_cmd, export_cmd, export_runs_cmd, reproduce_cmd, data_cmd):
    cli.add_command(command)


def main() -> None:
    """Entry point: user and environment errors -> one line on stderr, exit code 2; an internal
    error -> one line and exit code 1 (--debug, before the command, shows the traceback)."""
    debug = "--debug" in sys.argv[1:2]
    try:
        cli.main(args=sys.argv[2:] if debug else sys.argv[1:], standalone_mode=False)
    except UserError as e:
        _fail(str(e), 2)
    except (click.exceptions.Abort, KeyboardInterrupt) as e:
        _interrupted(e)
    except click.UsageError as e:  # a bad option: one line too, with the command to ask for help
        cmd = e.ctx.command_path if e.ctx else "mlplab"
        _fail(f"{e.format_message()} (see `{cmd} --help`)", 2)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except Exception as e:
        if debug:
            raise
        what = environment_error(e)
        if what:
            _fail(what, 2)
        _fail(f"internal error: {type(e).__name__}: {e} (run `mlplab --debug ...` for the traceback)", 1)


def _interrupted(e: BaseException) -> None:
    """One line: what the groups in training saved (an `Interrupted`), and that the same command
    resumes; exit code 130, or 143 after a SIGTERM."""
    text = e.text() if isinstance(e, Interrupted) else Interrupted(resume=COMMAND).text()
    err_console.print(text, highlight=False, markup=False, soft_wrap=True)
    sys.exit(143 if terminated() else 130)


def _fail(message: str, code: int) -> None:
    err_console.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(code)
