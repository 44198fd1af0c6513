"""examples/notebook.ipynb executed by a real Jupyter kernel (nbclient), made small through its
parameters cell; the assertions are on what its cells produced. And Kernel → Interrupt in a real
kernel: the epoch in training is saved, the same call resumes from it."""

import base64
import queue
import re
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytestmark = pytest.mark.slow  # Jupyter kernels

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


def _pngs(outputs) -> list[bytes]:
    return [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})]


def test_the_example_notebook_runs_and_shows_the_comparison(mnist):
    nb = _run_notebook()
    for cell in nb.cells:
        assert all(o.output_type != "error" for o in cell.get("outputs", [])), cell.source
    # interrupted after the first epoch: two lines say what was saved and how to resume
    (said,) = _outputs(nb, "def interrupt_after")
    lines = said["text"].strip().split("; ", 1)
    assert re.fullmatch(r"interrupted: saved 2-hidden\[dropout=0\.0\], 2-hidden\[dropout=0\.5\] "
                        r"at epoch 1/2 in .*course/checkpoints", lines[0]), lines
    assert lines[1] == "every finished run is saved; the same mlplab.run(...) call resumes"
    # the same call resumed: its progress block ended at 100 % and says so in its title
    progress = _outputs(nb, "results = mlplab.run")[0]["data"]["text/html"]
    assert "100%" in progress and "12/12 runs" in progress and "1 resumed from checkpoints" in progress
    # `results` shows as its comparison table: every configuration, ranked, with the Welch column
    shown = _outputs(nb, "results = mlplab.run")[-1]["data"]["text/html"]
    for name in NAMES:
        assert name.split("[")[1] in shown and name.split("[")[0] in shown
    assert "Val accuracy" in shown and "vs best" in shown and shown.count('<tr class=') == 6
    # table() is a DataFrame: six rows, the columns asked for
    table = _outputs(nb, "results.table()")[0]["data"]["text/html"]
    assert table.split("<tbody>")[1].count("<tr>") == 6
    for col in ("val_acc_std", "test_acc", "p_vs_best", "dropout"):
        assert col in table
    # figures arrive as PNG images, each exactly once (the last line; plt.show())
    for start in ("results.plot_curves()", "import matplotlib.pyplot", "best.plot_confusion()"):
        (png,) = _pngs(_outputs(nb, start))
        assert png[:4] == b"\x89PNG" and len(png) > 10_000, start
    assert "mlplab.Run" in _outputs(nb, "best = results.best()")[0]["data"]["text/plain"]
    # the PIL drawing is predicted, as the same drawing saved as a PNG file is
    predicted = _outputs(nb, "from PIL import")[0]["data"]["text/plain"]
    pil, file = re.fullmatch(r"\(array\(\[(\d)\]\), array\(\[(\d)\]\)\)", predicted).groups()
    assert pil == file, predicted
    # two studies: the 2-hidden models pool the seeds of both folders, the others stay as they were
    both = _outputs(nb, "more = mlplab.Suite")[-1]["data"]["text/html"]
    rows = both.split("<tbody>")[1].split("</tr>")[:-1]
    assert len(rows) == 6
    pooled = [r for r in rows if "course, more-seeds" in r]
    assert len(pooled) == 2 and all("2-hidden" in r and "<td>4</td>" in r for r in pooled)
    assert all("<td>course</td>" in r and "<td>2</td>" in r for r in rows if r not in pooled)
    history = _outputs(nb, "results.history()")[0]["data"]["text/html"]
    assert "2-hidden[dropout=0.5]" in history


# --- Kernel → Interrupt in a real kernel -------------------------------------------------------

SUITE = {"name": "k", "seeds": 2, "defaults": {"train_size": 1000, "epochs": 3, "batch_size": 100},
         "experiments": [{"name": "a", "architecture": "784-32-10"}]}
# After the first epoch the progress callback waits (bounded) for the interrupt, so the interrupt
# lands in the middle of training whatever the machine's speed; a run never interrupted fails.
TRAIN = """
import time, mlplab
def wait_after_epoch_1(e):
    if e["event"] == "epoch" and e["epoch"] == 1:
        print("epoch 1 finished", flush=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError("no interrupt came")
mlplab.run({suite!r}, {out!r}, progress=wait_after_epoch_1)
"""
RESUME = """
events = []
r = mlplab.run({suite!r}, {out!r}, progress=events.append)
print([e["message"] for e in events if e["event"] == "log"])
print([e["epoch"] for e in events if e["event"] == "epoch"], len(r))
"""


def _until(kc, msg_id, stop, deadline):
    """iopub messages of one execution until `stop(msg)` is true (or the deadline passes)."""
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id and stop(msg):
            return msg
    raise AssertionError("the kernel did not get there before the deadline")


def test_kernel_interrupt_saves_the_epoch_and_the_same_call_resumes(tmp_path, mnist):
    from jupyter_client.manager import start_new_kernel

    from mlplab.checkpoint import read_meta

    out = str(tmp_path / "out")
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        msg_id = kc.execute(TRAIN.format(suite=SUITE, out=out))
        deadline = time.monotonic() + 300
        _until(kc, msg_id, lambda m: "epoch 1 finished" in m["content"].get("text", ""), deadline)
        km.interrupt_kernel()  # Kernel → Interrupt: SIGINT to the kernel
        error = _until(kc, msg_id, lambda m: m["msg_type"] == "error", deadline)["content"]
        assert error["ename"] == "Interrupted"
        assert error["traceback"] == [  # what the user sees: two lines, no traceback through torch
            f"interrupted: saved a at epoch 1/3 in {out}/checkpoints",
            "every finished run is saved; the same mlplab.run(...) call resumes"]
        (ckpt,) = (tmp_path / "out" / "checkpoints").glob("*.safetensors")
        assert read_meta(ckpt)["epoch"] == 1
        while kc.get_shell_msg(timeout=300)["parent_header"].get("msg_id") != msg_id:
            pass  # its reply first: a request sent before it would be aborted with the cell

        text = []
        reply = kc.execute_interactive(RESUME.format(suite=SUITE, out=out), timeout=300,
                                       output_hook=lambda m: text.append(m["content"].get("text", "")))
        assert reply["content"]["status"] == "ok", reply["content"]
        logs, epochs = "".join(text).splitlines()
        assert "resumed from the checkpoint after epoch 1" in logs
        assert epochs == "[2, 3] 2"  # epochs 2 and 3 only; both runs stored
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
