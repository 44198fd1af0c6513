"""`mlplab data …`: fetch a dataset into the cache, inspect a dataset, show the cache."""

from __future__ import annotations

import click
from rich.table import Table

from . import choices
from .cli_common import console, err_console


@click.group("data")
def data_cmd() -> None:
    """Fetch and inspect datasets."""


@data_cmd.command("fetch")
@click.argument("name", type=click.Choice(sorted(choices.DATASET_NAMES)), metavar="NAME")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
              help="folder with the four IDX files")
def data_fetch(name, data_dir) -> None:
    """Download (or rebuild offline) NAME into the cache, verifying every file."""
    from . import data as data_mod  # torch: only for the commands that read data

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
    from . import data as data_mod

    table = Table("dataset", "cached", "size", "path")
    for row in data_mod.info():
        table.add_row(row["dataset"], "yes" if row["cached"] else "no",
                      f"{row['bytes'] / 1e6:.1f} MB", row["path"])
    console.print(table)
