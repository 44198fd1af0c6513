"""A figure appears exactly once in a real Jupyter kernel (nbclient, the inline backend), whichever
way the user shows it: the cell ends with it, it is assigned (shown at the end of the cell where
pyplot is in use, as pyplot's own figures are), `plt.show()`, or `display()`. Without pyplot, mlplab
never imports it; with it, the backend stays the user's. One kernel for every case."""

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytestmark = pytest.mark.slow  # a Jupyter kernel

import synthetic  # noqa: E402

import mlplab  # noqa: E402

SMALL = {"name": "f", "seeds": 2, "defaults": {"train_size": 500, "epochs": 2, "batch_size": 100,
                                              "dataset": synthetic.path(), "val_size": 1000},
         "experiments": [{"name": "a", "architecture": "784-16-10"},
                         {"name": "b", "architecture": "784-8-10"}]}

# (cell, images it must show)
CELLS = [
    # pyplot never imported: the Figure's own repr shows it
    ("r.plot_curves()", 1),
    ("fig = r.plot_curves()", 0),  # a bare Figure in a variable is not shown (matplotlib's OO API)
    ("display(r.plot_overlay())", 1),
    ("fig = r.plot_params()\ndisplay(fig)", 1),
    ("r.best().plot_confusion()", 1),
    ("assert 'matplotlib.pyplot' not in sys.modules, 'mlplab imported pyplot'", 0),
    # the user imports pyplot (Jupyter's inline backend): our figures are pyplot figures
    ("import matplotlib.pyplot as plt\nbackend = matplotlib.get_backend()", 0),
    ("r.plot_curves()", 1),
    ("fig = r.plot_curves()", 1),
    ("fig = r.plot_curves()\nplt.show()", 1),
    ("display(r.plot_curves())", 1),
    ("fig = r.plot_overlay('val_acc')\ndisplay(fig)\nplt.show()", 1),
    ("r.best().plot_errors()", 1),
    ("fig = r.plot_curves()\nplt.close(fig)", 0),
    ("fig", 1),  # a closed figure still shows when asked
    ("plt.plot([1, 2])\nr.plot_curves()", 2),  # the user's figure and ours, once each
    # matplotlib < 3.11 refuses an untracked Figure in plt.figure(fig): the fallback adopts it
    ("real_figure = plt.figure\n"
     "def old_figure(num=None, **kwargs):\n"
     "    if isinstance(num, matplotlib.figure.Figure):\n"
     "        raise ValueError('The passed figure is not managed by pyplot')\n"
     "    return real_figure(num, **kwargs)\n"
     "plt.figure = old_figure", 0),
    ("r.plot_curves()", 1),
    ("fig = r.plot_curves()", 1),
    ("fig = r.plot_curves()\nplt.show()", 1),
    ("plt.figure = real_figure", 0),
    ("assert matplotlib.get_backend() == backend and plt.get_fignums() == [], plt.get_fignums()", 0),
]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("figures") / "out"
    mlplab.run(SMALL, folder, progress=False)
    return folder


def test_each_figure_appears_once_whichever_way_it_is_shown(out):
    setup = f"import sys, matplotlib, mlplab\nr = mlplab.load({str(out)!r})"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(setup)]
                                  + [nbformat.v4.new_code_cell(src) for src, _ in CELLS])
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True).execute()
    shown = []
    for cell in nb.cells:
        errors = [f"{o.ename}: {o.evalue}" for o in cell.outputs if o.output_type == "error"]
        assert not errors, (cell.source, errors)
        shown.append(sum("image/png" in o.get("data", {}) for o in cell.outputs))
    assert shown[0] == 0
    assert [(src, n) for (src, _), n in zip(CELLS, shown[1:], strict=True)] == CELLS
