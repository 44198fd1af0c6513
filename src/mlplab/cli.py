"""The command line: the only module that reads argv or prints. Each command calls one library
function; a UserError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The command is our own process: before torch (and its OpenMP) loads, let a thread that waits
# for the others sleep instead of spinning. On a machine where other work holds a core, spinning
# made each op wait for a time slice: one 784x512 matmul of a 2-member group took 11-16 ms with
# 2 threads against 2.4 ms with 1 thread or with this (measured with one CPU-bound process
# beside it); it changes no result. The library leaves the user's process as it is.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import compare, report
from . import data as data_mod
from .errors import UserError, environment_error
from .interrupt import COMMAND, Interrupted, terminate_as_interrupt, terminated
from .progress import progress_view
from .suite import apply_overrides, builtin_suites, load_suite
from .summary import param_counts, summary_rows

# Tables keep their columns when piped to a file or a CI log (rich would wrap at 80).
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)


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
@click.argument("suite", default="quick")
@click.option("--out", "out", default="out", show_default=True, type=click.Path(),
              help="results folder (runs/, results.csv, plots/)")
@click.option("--epochs", type=click.IntRange(min=1), help="override every experiment's epochs")
@click.option("--seeds", type=click.IntRange(min=1), help="number of seeds (0..N-1) per configuration")
@click.option("--only", multiple=True, help="run only this experiment (repeatable)")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
              help="folder with the dataset's four IDX files")
@click.option("--cluster", help="Dask scheduler address (tcp://HOST:8786): train the groups there")
@click.option("--workers", type=click.IntRange(min=1),
              help="start a local Dask cluster of N worker processes")
@click.option("--checkpoint-every", default=60.0, show_default=True, type=click.FloatRange(min=0),
              callback=lambda ctx, p, v: _not_nan(v),
              help="seconds between a group's epoch checkpoints (0: every epoch, inf: only at "
                   "halving rungs)")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False),
              help="CA certificate (PEM) of a tls:// Dask scheduler")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="client certificate (PEM)")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="client private key (PEM)")
def run(suite, out, epochs, seeds, only, device, data_dir, cluster, workers, checkpoint_every,
        tls_ca, tls_cert, tls_key) -> None:
    """Train every configuration of SUITE (built-in name or TOML file) and compare them."""
    from . import sweep  # torch import is slow: only for commands that train
    from .cluster import tls_security

    s = apply_overrides(load_suite(suite), epochs=epochs, seeds=seeds, only=tuple(only))
    security = tls_security(tls_ca, tls_cert, tls_key)
    try:
        with terminate_as_interrupt(), progress_view(True) as progress:  # SIGTERM saves as Ctrl-C
            rows = sweep.run_suite(s, out, device=device, data_dir=data_dir, progress=progress,
                                   cluster=cluster, workers=workers, security=security,
                                   checkpoint_every=checkpoint_every)
    except KeyboardInterrupt as e:  # here, before click turns it into Abort (and a blank line)
        _interrupted(e)
    # The folder is the unit: `run` and `report` show the same table, of every run in OUT.
    paths = _report_and_table(out, f"suite {s.name}: {len(rows)} runs", keep=True)
    search = report.search_log(Path(out)) if s.prunes else None
    if search:
        console.print(f"successive halving: {report.budget_text(search)}", highlight=False)
    console.print(f"results: {Path(out) / 'results.csv'}   plots: {Path(out) / 'plots'}/   "
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
    from .store import snapshot

    if keep and to is None and report.up_to_date(out):
        paths = {"html": Path(out) / "report.html", "md": Path(out) / "report.md", "notes": []}
    else:
        paths = report.write_report(out, to=to)
    rows, _ = snapshot(out)
    _print_table(compare.comparison(rows), f"{out}: {len(rows)} runs" + (f" ({what})" if what else ""))
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
        print(json.dumps([{k: r[k] for k in store.COLUMNS} | {"config": json.loads(r["config"])}
                          for r in found], indent=2))
    elif fmt == "csv":  # text cells neutralised against spreadsheet formulas
        store.write_csv(sys.stdout, found, store.COLUMNS)
    else:  # names are data (maybe someone else's folder): no control character reaches the terminal
        from .safetext import printable

        def cell(v, f="{}"):
            return escape(printable(f.format(v) if isinstance(v, int | float) else v))

        table = Table(*("run_id", "experiment", "seed", "epochs", "val_acc", "test_acc",
                        "status"), title=f"{len(found)} runs")
        for r in found:
            table.add_row(cell(r["run_id"]), cell(r["experiment"]), cell(r["seed"]),
                          cell(r["epochs_run"]), cell(r["val_acc"], "{:.4f}"),
                          cell(r["test_acc"], "{:.4f}"), cell(r["status"]))
        console.print(table)


SUMMARY_MAX = 12  # configurations printed by `summary`; a big grid says how many more


@cli.command()
@click.argument("suite")
@click.option("--only", multiple=True, help="only this experiment (repeatable)")
def summary(suite, only) -> None:
    """Keras-style model summary of each configuration of SUITE."""
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


@cli.command("predict")
@click.argument("run")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--out", default="out", show_default=True, type=click.Path(),
              help="results folder to look RUN up in, when RUN is a run id")
@click.option("--top", default=3, show_default=True, type=click.IntRange(1, 100))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--kaggle", is_flag=True,
              help="write a Kaggle submission (ImageId from 1, Label) instead of a table")
@click.option("--to", "dest", type=click.Path(dir_okay=False),
              help="file for --kaggle (default: standard output)")
@click.option("--preprocess/--no-preprocess", default=None,
              help="bring images to MNIST form (crop, 20 px, centre, light on dark); default: "
                   "unless already 28x28 with a dark border")
def predict_cmd(run, images, out, top, as_json, kaggle, dest, preprocess) -> None:
    """Classify IMAGES (PNG/JPEG of any size and polarity, .npy batches, pixel CSV or Parquet
    files such as Kaggle's test.csv) with a stored RUN (run folder, or run id in --out)."""
    from . import predict as pr

    if dest and not kaggle:
        raise UserError("--to goes with --kaggle (the submission file to write)")
    folder = pr.find_run(run, out)
    cfg, model = pr.load_model(folder)
    names, x = pr.load_inputs(list(images), model.widths[0], preprocess)
    preds = pr.predict(model, x, top)
    if kaggle:
        body = pr.kaggle_csv([ps[0][0] for ps in preds])
        if dest:
            console.print(f"submission: {pr.write_to(dest, body)} ({len(preds):,} rows)")
        else:
            sys.stdout.buffer.write(body)
        return
    classes = pr.class_names(folder, cfg)
    if as_json:
        print(pr.to_json([{"input": n, "top": [{"class": classes[c], "index": c, "p": p}
                                               for c, p in ps]} for n, ps in zip(names, preds,
                                                                                  strict=True)]))
        return
    table = Table("input", *(f"#{i + 1}" for i in range(top)), title=f"run {folder.name}")
    for n, ps in zip(names, preds, strict=True):
        table.add_row(escape(n), *(f"{escape(classes[c])} ({p:.1%})" for c, p in ps))
    console.print(table)


@cli.command("export")
@click.argument("run")
@click.option("--format", "fmt", required=True, type=click.Choice(["onnx", "torchscript"]))
@click.option("--out", default="out", show_default=True, type=click.Path(),
              help="results folder to look RUN up in, when RUN is a run id")
@click.option("--to", "dest", type=click.Path(allow_dash=True),
              help="file to write (default: in the run folder); - for standard output")
def export_cmd(run, fmt, out, dest) -> None:
    """Write RUN as a standalone model: float [N, 784] pixels / 255 in, logits out."""
    from . import predict as pr

    path = pr.export(pr.find_run(run, out), fmt, dest if dest in (None, "-") else Path(dest))
    if path == "-":  # the model went to stdout: the message goes to stderr
        err_console.print(f"{fmt}: written to standard output", highlight=False)
    else:
        console.print(f"{fmt}: {path}", markup=False, highlight=False)


@cli.command("export-runs")
@click.argument("out", type=click.Path())
@click.argument("dest", required=False, type=click.Path())
@click.option("--to", "to", required=True, metavar="TARGET",
              help="mlflow, tensorboard (DEST: a folder) or parquet (DEST: a file)")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
              "MLflow's sqlite:///mlflow.db)")
@click.option("--experiment", help="MLflow experiment name (default: OUT's name)")
def export_runs_cmd(out, dest, to, tracking_uri, experiment) -> None:
    """Export the runs of OUT to MLflow, TensorBoard or a Parquet table; runs already there are
    skipped."""
    from .api import load

    done = load(out).export_runs(to, dest, tracking_uri=tracking_uri, experiment=experiment)
    where = f"experiment {done['experiment']!r} in {done['where']}" if to == "mlflow" else done["where"]
    console.print(f"{to}: {done['exported']} runs exported, {done['skipped']} already there; {where}",
                  markup=False, highlight=False)


@cli.command("reproduce")
@click.argument("run")
@click.option("--out", default="out", show_default=True, type=click.Path(),
              help="results folder holding RUN (and the members of its group)")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--json", "as_json", is_flag=True)
def reproduce_cmd(run, out, device, as_json) -> None:
    """Retrain RUN from its stored config and seed; report the difference in final metrics."""
    from . import predict as pr

    folder = pr.find_run(run, out)
    result = pr.reproduce(folder, folder.parent.parent, device)
    if as_json:
        print(pr.to_json(result))
        return
    table = Table("metric", "stored", "reproduced", "difference", title=f"run {result['run_id']}")
    for k, v in result["stored"].items():
        table.add_row(k, f"{v:.6g}", f"{result['new'][k]:.6g}", f"{result['diff'][k]:+.3g}")
    console.print(table)
    console.print(pr.describe(result), highlight=False, markup=False)


def _not_nan(value: float) -> float:
    if value != value:  # click's FloatRange lets NaN through (every comparison with it is false)
        raise click.BadParameter("nan is not a number of seconds (0: every epoch, inf: only at "
                                 "halving rungs)")
    return value


@cli.group("data")
def data_cmd() -> None:
    """Fetch and inspect datasets."""


@data_cmd.command("fetch")
@click.argument("name", type=click.Choice(sorted(data_mod.DATASETS)), metavar="NAME")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
              help="folder with the four IDX files")
def data_fetch(name, data_dir) -> None:
    """Download (or rebuild offline) NAME into the cache, verifying every file."""
    ds = data_mod.load(name, data_dir, log=lambda s: err_console.print(f"[dim]{s}[/]"))
    console.print(f"{name}: {len(ds.x_train):,} train + {len(ds.x_test):,} test images "
                  f"from {ds.source}; cached in {data_mod.home() / 'datasets' / name}")


@data_cmd.command("inspect")
@click.argument("path")
@click.option("--png", "png", type=click.Path(dir_okay=False),
              help="where to write the sample grid (default: samples.png in the current folder)")
@click.option("--per-class", default=8, show_default=True, type=click.IntRange(1, 50))
def data_inspect(path, png, per_class) -> None:
    """Show what PATH (a dataset name, or [LAYOUT:]PATH) holds: layout, splits, image shape,
    pixel range, classes and their balance; write a grid of samples per class."""
    from . import datasets
    from .predict import write_to

    found = datasets.inspect(path, per_class=per_class)  # its notes are printed below
    console.print(str(found), highlight=False, markup=False)
    console.print(f"samples: {write_to(png or 'samples.png', found.png())}", highlight=False)


@data_cmd.command("info")
def data_info() -> None:
    """Show what is in the cache."""
    table = Table("dataset", "cached", "size", "path")
    for row in data_mod.info():
        table.add_row(row["dataset"], "yes" if row["cached"] else "no",
                      f"{row['bytes'] / 1e6:.1f} MB", row["path"])
    console.print(table)


def _print_table(table_data: list[dict], title: str) -> None:
    table = Table(title=title, caption=compare.FOOTER, caption_justify="left")
    rows = compare.table_rows(table_data)
    columns = [(k, c) for k, c in compare.COLUMNS if k != "settings" or any(r["settings"] for r in rows)]
    for key, col in columns:
        # text columns fold onto more lines instead of ending in '…': names stay distinguishable
        table.add_column(col, justify="left" if key in compare.TEXT_COLUMNS else "right",
                         overflow="fold", no_wrap=key not in compare.TEXT_COLUMNS)
    for row in rows:
        table.add_row(*(escape(row[key]) for key, _ in columns))
    console.print(table)
    for row in rows:  # a too-short BatchNorm run: what is wrong and the fix, under the table
        if row.get("bn_note"):
            console.print(escape(row["bn_note"]), style="yellow", soft_wrap=True)


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
