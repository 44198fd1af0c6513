"""The Python API against the CLI on the same store, on the synthetic set (tests/synthetic.py:
what is compared is the store, not MNIST); and mlplab as a guest in the caller's process
(backend, RNG, threads, precision flags untouched)."""

import csv
import gc
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import synthetic

import mlplab
from mlplab.errors import UserError
from mlplab.progress import LineView, Tracker

LONG = "bn-64-32 with a name long enough to be cut in a narrow column"
SUITE = {"name": "tiny-api", "seeds": 2,
         "defaults": {"train_size": 2000, "epochs": 2, "batch_size": 100, "dataset": synthetic.path(),
                      "val_size": 1000},
         "experiments": [{"name": "narrow", "architecture": "784-32-10"},
                         {"name": LONG, "architecture": "64-32", "batch_norm": True,
                          "grid": {"dropout": [0.0, 0.2]}}]}


@pytest.fixture(scope="module")
def cli_out(tmp_path_factory):
    """The suite trained by the real command line."""
    tmp = tmp_path_factory.mktemp("api")
    toml = tmp / "tiny.toml"
    toml.write_text(
        'name = "tiny-api"\nseeds = 2\n[defaults]\ntrain_size = 2000\nepochs = 2\nbatch_size = 100\n'
        f'dataset = "{synthetic.path()}"\nval_size = 1000\n'
        '[[experiment]]\nname = "narrow"\narchitecture = "784-32-10"\n'
        f'[[experiment]]\nname = "{LONG}"\narchitecture = "64-32"\nbatch_norm = true\n'
        '[experiment.grid]\ndropout = [0.0, 0.2]\n')
    out = tmp / "out"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # piped, as in a CI log
    proc = subprocess.run([sys.executable, "-m", "mlplab", "run", str(toml), "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    (tmp / "stdout.txt").write_text(proc.stdout)
    return out


def test_load_reads_what_the_cli_wrote(cli_out):
    r = mlplab.load(cli_out)
    assert len(r) == 6
    with open(cli_out / "results.csv") as f:
        csv_rows = {row["run_id"]: row for row in csv.DictReader(f)}
    runs = r.to_pandas()
    assert sorted(runs["run_id"]) == sorted(csv_rows)
    for _, row in runs.iterrows():  # every run: the CLI's numbers, and its config as columns
        assert row["test_acc"] == pytest.approx(float(csv_rows[row["run_id"]]["test_acc"]))
        assert row["batch_size"] == 100 and row["train_size"] == 2000
    assert set(runs["batch_norm"]) == {False, True} and set(runs["dropout"]) == {0.0, 0.2}

    table = r.table()
    assert list(table.index) == list(table.sort_values("rank").index)  # rank order
    assert set(table.index) == {"narrow", f"{LONG}[dropout=0.0]", f"{LONG}[dropout=0.2]"}
    assert {"val_acc", "val_acc_std", "test_acc", "test_acc_std", "n", "p_vs_best", "rank"} <= set(table)
    assert "dropout" in table and "batch_norm" in table  # the settings that differ
    for name, row in table.iterrows():
        accs = runs.loc[runs["experiment"] == name, "val_acc"]
        assert row["val_acc"] == pytest.approx(accs.mean())
        assert row["val_acc_std"] == pytest.approx(accs.std(ddof=1))
        assert row["n"] == 2
    assert table["vs_best"].iloc[0] == "best" and np.isnan(table["p_vs_best"].iloc[0])

    hist = r.history()
    assert len(hist) == 6 * 2 and set(hist["epoch"]) == {1, 2}
    assert {"train_loss", "val_acc", "lr"} <= set(hist)

    html = r._repr_html_()
    for name in ("narrow", "[dropout=0.2]", "Val accuracy"):
        assert name in html


def test_best_run_predicts_what_was_measured(cli_out, synthetic):
    r = mlplab.load(cli_out)
    best = r.best()
    table = r.table()
    assert best.config.name == table.index[0]
    same = r.to_pandas().query("experiment == @best.config.name")
    assert best.metrics["val_acc"] == same["val_acc"].max()
    # the stored test accuracy, recomputed from the model on the test set it was measured on
    images = synthetic.x_test.numpy().reshape(-1, 28, 28)
    pred = best.predict(images)
    assert (pred == synthetic.y_test.numpy()).mean() == pytest.approx(best.metrics["test_acc"], abs=1e-4)
    proba = best.predict_proba(images[:5] / 255.0)  # floats in [0, 1] are pixels too
    assert proba.shape == (5, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (proba.argmax(1) == pred[:5]).all()
    assert r[best.run_id[:6]].run_id == best.run_id
    assert list(best.history.columns)[:3] == ["epoch", "train_loss", "train_acc"]
    with pytest.raises(KeyError):
        r["zzzz"]
    with pytest.raises(UserError, match=r"^images: shape \[2, 3, 4, 5, 6\]; expected an image"):
        best.predict(np.zeros((2, 3, 4, 5, 6)))
    with pytest.raises(UserError, match=r"^images\[0\]: the image is blank"):  # any size, no digit
        best.predict(np.zeros((3, 20, 20)))
    path = best.export(cli_out / "m.pt", format="torchscript")
    assert path.is_file() and path.stat().st_size > 10_000


def test_figures_are_figures(cli_out):
    from matplotlib.figure import Figure

    r = mlplab.load(cli_out)
    for name in ("plot_curves", "plot_overlay", "plot_params", "plot_confusion", "plot_errors"):
        fig = getattr(r, name)()
        assert isinstance(fig, Figure) and fig.axes, name
    assert len(r.plot_curves().axes) == 2 * 3  # loss and accuracy per configuration
    with pytest.raises(UserError, match="metric"):
        r.plot_overlay("val_f1")


def test_run_from_python_temporary_folder_and_errors():
    suite = mlplab.Suite(**{**SUITE, "experiments": SUITE["experiments"][:1], "seeds": 1})
    r = mlplab.run(suite, epochs=1, progress=False)
    folder = r.out
    assert folder.is_dir() and len(r) == 1 and r.to_pandas()["epochs_run"].tolist() == [1]
    del r
    gc.collect()
    assert not folder.exists()  # a temporary store goes with its Results
    with pytest.raises(UserError, match="lr"):
        mlplab.run({"name": "bad", "experiments": [{"name": "x", "lr": -1}]}, progress=False)
    with pytest.raises(UserError, match="expected a built-in name"):
        mlplab.run(42, progress=False)
    with pytest.raises(UserError, match="not an experiment"):
        mlplab.run("quick", only="nope", progress=False)


def test_resume_through_the_api(tmp_path):
    events = []
    first = mlplab.run(SUITE, tmp_path / "o", epochs=1, only="narrow", progress=events.append)
    assert len(first) == 2 and any(e["event"] == "epoch" for e in events)
    events.clear()
    again = mlplab.run(SUITE, tmp_path / "o", epochs=1, only="narrow", progress=events.append)
    assert [e["todo"] for e in events if e["event"] == "suite"] == [0]  # nothing retrained
    assert sorted(again.to_pandas()["run_id"]) == sorted(first.to_pandas()["run_id"])


GUEST = """
import sys, matplotlib, torch
matplotlib.use("svg")
torch.manual_seed(1234)
torch.set_num_threads(1)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
before = (matplotlib.get_backend(), torch.get_rng_state().clone(), torch.get_num_threads(),
          torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
          torch.get_float32_matmul_precision())
import mlplab
assert "matplotlib.pyplot" not in sys.modules, "import mlplab loaded pyplot"
r = mlplab.run({"name": "g", "seeds": 2, "defaults": {"train_size": 1000, "epochs": 1},
                "experiments": [{"name": "a", "architecture": "32", "dropout": 0.3,
                                 "aug_shift": 2.0}]}, progress=False)
figs = [r.plot_curves(), r.plot_overlay(), r.plot_params(), r.plot_confusion(), r.plot_errors()]
r.report()
after = (matplotlib.get_backend(), torch.get_rng_state(), torch.get_num_threads(),
         torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.get_float32_matmul_precision())
assert before[0] == after[0], ("backend", before[0], after[0])
assert torch.equal(before[1], after[1]), "torch's global RNG state changed"
assert before[2:] == after[2:], (before[2:], after[2:])
assert "matplotlib.pyplot" not in sys.modules, "pyplot was loaded"
print("guest ok")
"""


def test_mlplab_is_a_guest_in_the_callers_process():
    code = GUEST.replace('"epochs": 1}', f'"epochs": 1, "dataset": {synthetic.path()!r}, "val_size": 1000}}')
    assert code != GUEST
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ})
    assert proc.returncode == 0 and "guest ok" in proc.stdout, proc.stderr[-2000:]


def test_progress_has_an_eta_from_the_first_batch():
    t = Tracker()
    plan = [{"label": "a", "members": 2, "epochs": 4, "cost": 100.0},
            {"label": "b", "members": 1, "epochs": 4, "cost": 300.0}]
    t.update({"event": "suite", "suite": "s", "cells": 3, "todo": 3, "groups": 2, "device": "cpu",
              "epochs": 8, "plan": plan})
    t.update({"event": "group", "index": 0, "groups": 2, "label": "a", "members": 2, "epochs": 4})
    assert t.eta() is None
    t.update({"event": "batch", "epoch": 1, "epochs": 4, "step": 5, "steps": 10})
    assert t.fraction() == pytest.approx(0.5 / 4 * 100 / 400)
    assert t.eta() is not None and t.eta() >= 0
    stream = io.StringIO()
    view = LineView(stream)
    for e in ({"event": "suite", "suite": "s", "cells": 3, "todo": 3, "groups": 2, "device": "cpu",
               "epochs": 8, "plan": plan},
              {"event": "group", "index": 0, "groups": 2, "label": "a", "members": 2, "epochs": 4},
              {"event": "epoch", "epoch": 1, "epochs": 4, "val_acc": [0.91, 0.93], "running": 2,
               "computing": 2}):
        view(e)
    text = stream.getvalue()
    assert "best val_acc 0.9300" in text and "ETA " in text and "ETA …" not in text


def test_cli_table_never_cuts_a_name(cli_out, cli_here):
    out = (cli_out.parent / "stdout.txt").read_text()
    assert "…" not in out
    flat = " ".join(out.split())  # a folded cell continues on the next line
    for word in LONG.split():
        assert word in flat
    assert "[dropout=0.0]" in flat and "[dropout=0.2]" in flat
    listing = cli_here("list").stdout
    assert "8 × 2 = 16" in listing  # quick: configurations x seeds = runs


def test_version():
    assert mlplab.__version__ and mlplab.__version__ != "0+unknown"
    assert Path(mlplab.__file__).name == "__init__.py"
    assert json.dumps(mlplab.__all__)
