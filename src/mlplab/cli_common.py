"""What the command line's modules share: the consoles (the only places mlplab prints), the
comparison table as a terminal table, and click's checks the library does not make."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import compare
from .records import Configuration

# Tables keep their columns when piped to a file or a CI log (rich would wrap at 80).
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)


def print_table(table_data: list[Configuration], title: str) -> None:
    """The comparison on the terminal, with the BatchNorm notes under it."""
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


def not_nan(ctx, param, value: float | None) -> float | None:
    """click's FloatRange lets NaN through (every comparison with it is false)."""
    if value is not None and value != value:
        raise click.BadParameter("nan is not a number of seconds (0: every epoch, inf: only at "
                                 "halving rungs)")
    return value
