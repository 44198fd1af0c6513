"""Names are data: user text (experiment names, paths, anything read from someone else's results
folder) made inert for where it is shown — a terminal, Markdown, a CSV cell. HTML is escaped by
jinja2/markupsafe, matplotlib text by `plots.plain`. Torch-free, imported everywhere.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (ESC starts terminal sequences, OSC can set the window title or
# write hyperlinks, BEL rings) and the bidirectional overrides that reorder what is displayed.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SPACE = {"\t": " ", "\n": " ", "\r": " ", "\v": " ", "\f": " "}


def printable(text: object) -> str:
    """`text` safe for a terminal, on one line: whitespace controls become a space, every other
    control character its visible escape (`\\x1b`), so two names that differ only there still
    look different."""
    s = str(text)
    if not _CONTROL.search(s):
        return s
    return _CONTROL.sub(lambda m: _SPACE.get(m[0]) or repr(m[0])[1:-1], s)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def markdown(text: object) -> str:
    """`text` as literal Markdown text: no HTML (`<script>` becomes `&lt;script&gt;`), no links,
    images, emphasis or table breaks, on one line."""
    s = printable(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A CSV cell that no spreadsheet runs as a formula (OWASP, CSV injection): text starting
    with = + - @ tab or CR gets a leading apostrophe. Numbers stay numbers (-0.5 is not text)."""
    if not isinstance(value, str):
        return value
    if value.startswith(_FORMULA_START):
        value = "'" + value
    return printable(value)
