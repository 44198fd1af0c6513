"""examples/notebook.ipynb executed by a real Jupyter kernel (nbclient), made small through its
parameters cell; the assertions are on what its cells produced."""

import base64

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from conftest import ROOT  # noqa: E402

NAMES = [f"{d}-hidden[dropout={p}]" for d in (2, 3, 5) for p in ("0.0", "0.5")]


def _run_notebook():
    nb = nbformat.read(ROOT / "examples" / "notebook.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "the notebook needs one cell tagged 'parameters'"
    params[0].source = "EPOCHS = 2\nSEEDS = 2\nTRAIN_SIZE = 2000\nOUT = None"
    # the kernel inherits this process' environment: the test cache, offline data
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    return nb


def _outputs(nb, source_start):
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source_start)]
    assert cells, source_start
    return cells[0].outputs


def test_the_example_notebook_runs_and_shows_the_comparison(mnist):
    nb = _run_notebook()
    for cell in nb.cells:
        assert all(o.output_type != "error" for o in cell.get("outputs", [])), cell.source
    # `results` shows as its comparison table: every configuration, ranked, with the Welch column
    shown = _outputs(nb, "results = mlplab.run")[-1]["data"]["text/html"]
    for name in NAMES:
        assert name.split("[")[1] in shown and name.split("[")[0] in shown
    assert "Val accuracy" in shown and "vs best" in shown and shown.count('<tr class=') == 6
    # the live progress block ended at 100 %
    progress = _outputs(nb, "results = mlplab.run")[0]["data"]["text/html"]
    assert "100%" in progress and "12/12 runs" in progress
    # table() is a DataFrame: six rows, the columns asked for
    table = _outputs(nb, "results.table()")[0]["data"]["text/html"]
    assert table.split("<tbody>")[1].count("<tr>") == 6
    for col in ("val_acc_std", "test_acc", "p_vs_best", "dropout"):
        assert col in table
    # figures arrive as PNG images
    for start in ("results.plot_curves()", 'results.plot_overlay("val_loss")', "best.plot_confusion()"):
        png = base64.b64decode(_outputs(nb, start)[0]["data"]["image/png"])
        assert png[:4] == b"\x89PNG" and len(png) > 10_000, start
    assert "mlplab.Run" in _outputs(nb, "best = results.best()")[0]["data"]["text/plain"]
    history = _outputs(nb, "results.history()")[0]["data"]["text/html"]
    assert "2-hidden[dropout=0.5]" in history
