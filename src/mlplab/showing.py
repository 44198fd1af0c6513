"""How the API's figures reach the screen: exactly once, in the user's own way, as a guest.

A figure that ends a cell, is `display()`ed, or is shown by `plt.show()` (or, where pyplot is in
use, at the end of the cell, as pyplot's own figures are) appears once:

- pyplot not imported (the user never asked for it): the figure is a bare Figure; IPython shows
  it through its `_repr_png_` when it ends a cell or is displayed. pyplot is never imported here,
  and the backend never chosen or changed.
- pyplot imported: the figure is handed to pyplot (`adopt`), so `plt.show()` and the inline
  backend's end-of-cell flush show it like any pyplot figure. When IPython displays it (it ended
  the cell, or `display(fig)`), `displayed` takes it back from the inline backend's list, so the
  flush at the end of the cell does not show it a second time (plain pyplot figures do appear
  twice there: measured with matplotlib-inline 0.2).
"""

from __future__ import annotations

import sys


def adopt(fig):
    """Give `fig` to pyplot when the user has imported it (so `plt.show()` shows it); a no-op
    otherwise. Returns `fig`."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return fig
    try:
        plt.figure(fig)  # matplotlib >= 3.11: an untracked Figure becomes a pyplot figure
    except ValueError:  # older: "not managed by pyplot"; pyplot's constructor hook instead
        plt.figure(FigureClass=lambda *args, **kwargs: fig)
    return fig


def displayed(fig) -> None:
    """IPython is displaying `fig` now: where the inline backend would show it again at the end
    of the cell, close it in pyplot (the Figure itself stays usable). Other backends keep it:
    their windows are not a second copy in the notebook."""
    plt = sys.modules.get("matplotlib.pyplot")
    manager = getattr(fig.canvas, "manager", None)
    if plt is None or manager is None or not plt.fignum_exists(manager.num):
        return
    if "inline" in plt.get_backend():  # pyplot manages fig, so its backend is resolved already
        plt.close(fig)
