"""`mlplab predict`, `export`, `export-runs`, `reproduce`: what is done with trained runs."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from . import api, layout
from .cli_common import console, err_console
from .errors import UserError
from .inputs import DEVICES


@click.command("predict")
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


@click.command("export")
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


@click.command("export-runs")
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
    done = api.load(out).export_runs(to, dest, tracking_uri=tracking_uri, experiment=experiment)
    where = f"experiment {done['experiment']!r} in {done['where']}" if to == "mlflow" else done["where"]
    console.print(f"{to}: {done['exported']} runs exported, {done['skipped']} already there; {where}",
                  markup=False, highlight=False)


@click.command("reproduce")
@click.argument("run")
@click.option("--out", default="out", show_default=True, type=click.Path(),
              help="results folder holding RUN (and the members of its group)")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(DEVICES))
@click.option("--json", "as_json", is_flag=True)
def reproduce_cmd(run, out, device, as_json) -> None:
    """Retrain RUN from its stored config and seed; report the difference in final metrics."""
    from . import predict as pr

    folder = pr.find_run(run, out)
    result = pr.reproduce(folder, layout.out_of(folder), device)
    if as_json:
        print(pr.to_json(result))
        return
    table = Table("metric", "stored", "reproduced", "difference", title=f"run {result['run_id']}")
    for k, v in result["stored"].items():
        table.add_row(k, f"{v:.6g}", f"{result['new'][k]:.6g}", f"{result['diff'][k]:+.3g}")
    console.print(table)
    console.print(pr.describe(result), highlight=False, markup=False)
