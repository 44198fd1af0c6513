"""End to end through the real command line, on a slice of real MNIST; what a command says and
writes on bad input, and the table of a folder with two configurations, through the same entry
point in this process (`cli_here`, on the synthetic set)."""

import csv
import json
import os
import re
import subprocess
import sys

import pytest
from procs import heavy_after
from synthetic import on_synthetic

SUITE = """
name = "tiny"
seeds = 2
[defaults]
train_size = 2000
epochs = 3
batch_size = 100
[[experiment]]
name = "narrow"
architecture = "784-32-10"
[[experiment]]
name = "bn"
architecture = "784-64-32-10"
batch_norm = true
dropout = 0.2
bn_momentum = 0.9
"""


def mlplab(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mlplab", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"}, timeout=600)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist):
    tmp = tmp_path_factory.mktemp("cli")
    suite = tmp / "tiny.toml"
    suite.write_text(SUITE)
    out = tmp / "out"
    return suite, out, mlplab("run", str(suite), "--out", str(out), "--device", "cpu")


def test_run_writes_table_results_runs_and_plots(tiny_run):
    suite, out, proc = tiny_run
    assert proc.returncode == 0, proc.stderr
    for col in ("Architecture", "Model", "Params", "Epochs", "Test loss", "Test accuracy"):
        assert col in proc.stdout
    assert "784-64-32-10" in proc.stdout and " ± " in proc.stdout
    assert "group 1/2" in proc.stderr and "epoch 3/3" in proc.stderr  # plain progress lines
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:13] == ["run_id", "experiment", "architecture", "params", "seed",
                                  "epochs_run", "best_epoch", "val_loss", "val_acc", "test_loss",
                                  "test_acc", "train_seconds", "status"]
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    assert [r["params"] for r in rows] == ["25450"] * 2 + ["53034"] * 2
    assert all(0.6 < float(r["test_acc"]) < 1 for r in rows), [r["test_acc"] for r in rows]
    for r in rows:
        folder = out / "runs" / r["run_id"]
        assert sorted(p.name for p in folder.iterdir()) == [
            "config.json", "errors.safetensors", "history.csv", "metrics.json",
            "weights.safetensors"]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert sum(map(sum, metrics["confusion_matrix"])) == 10_000
        assert len(metrics["per_class_acc"]) == 10
        assert json.loads((folder / "config.json").read_text())["seed"] == int(r["seed"])
        history = (folder / "history.csv").read_text().splitlines()
        assert history[0] == "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds"
        assert len(history) == 4
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == ["bn.png", "narrow.png", "overlay.png"]
    assert all((out / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in plots)


def test_rerun_resumes_and_trains_nothing(tiny_run):
    suite, out, first = tiny_run
    before = (out / "results.csv").read_text()
    report = (out / "report.html").stat()
    again = mlplab("run", str(suite), "--out", str(out), "--device", "cpu")
    assert again.returncode == 0, again.stderr
    assert f"suite tiny: nothing to train: 4 runs already in {out}" in again.stderr
    assert "0/0" not in again.stderr and "0%" not in again.stderr  # no empty bar
    assert (out / "results.csv").read_text() == before
    kept = (out / "report.html").stat()  # the store did not change: the report is not drawn again
    assert (kept.st_ino, kept.st_mtime_ns) == (report.st_ino, report.st_mtime_ns)
    assert "runs (suite tiny: 4 runs)" in again.stdout  # the table is printed all the same
    more = mlplab("run", str(suite), "--out", str(out), "--device", "cpu", "--seeds", "3",
                  "--only", "narrow")
    assert "2 runs" in more.stderr or "3 runs, 1 to train" in more.stderr
    assert more.returncode == 0 and (out / "report.html").stat().st_ino != kept.st_ino  # redrawn


def test_bad_input_is_one_line_and_exit_2(tmp_path, cli_here):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[experiment]]\nname = "x"\nactivation = "swish9"\n')
    out = tmp_path / "never"
    proc = cli_here("run", str(bad), "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "activation 'swish9' is not one of: relu" in proc.stderr
    assert not out.exists()
    proc = cli_here("run", "quick", "--out", str(out), "--only", "nope")
    assert proc.returncode == 2 and "not an experiment" in proc.stderr and not out.exists()
    proc = cli_here("run", "quick", "--epochs", "0")
    assert proc.returncode == 2 and "--epochs" in proc.stderr


def test_summary_prints_the_keras_numbers(cli_here):
    proc = cli_here("summary", "seed")
    assert proc.returncode == 0, proc.stderr
    assert "Total params: 538,890" in proc.stdout
    assert "Trainable params: 537,354" in proc.stdout
    assert "Non-trainable params: 1,536" in proc.stdout
    assert "Total params: 1,509,706" in proc.stdout
    assert "Trainable params: 1,505,738" in proc.stdout
    assert "Non-trainable params: 3,968" in proc.stdout
    assert "random_normal(stddev=0.039)" in proc.stdout and "glorot_uniform" in proc.stdout


def test_list_and_data_info(mnist, cli_here):
    proc = cli_here("list")
    assert proc.returncode == 0 and all(s in proc.stdout for s in ("seed", "assignment", "quick"))
    info = cli_here("data", "info")
    assert info.returncode == 0 and "mnist" in info.stdout and "yes" in info.stdout
    fetch = cli_here("data", "fetch", "mnist")
    assert fetch.returncode == 0 and "from cache" in fetch.stdout


@pytest.mark.slow
def test_two_runs_into_one_folder_one_trains_the_other_stops_at_once(tmp_path, mnist):
    suite = tmp_path / "race.toml"
    suite.write_text('name = "race"\nseeds = 2\n[defaults]\ntrain_size = 10000\nepochs = 8\n'
                     '[[experiment]]\nname = "a"\narchitecture = "784-64-10"\n')
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mlplab", "run", str(suite), "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "in use by another mlplab run (pid " in loser and len(loser.strip().splitlines()) == 1
    winner_pid = next(p.pid for p, (code, _) in zip(procs, results, strict=True) if code == 0)
    assert f"pid {winner_pid} " in loser
    assert len(list((out / "runs").iterdir())) == 2  # trained once: two seeds, two folders
    # the lock dies with its holder: a rerun (kill -9 or not) is never blocked
    again = mlplab("run", str(suite), "--out", str(out))
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers"),
    (["--workers", "-1"], "--workers"),
    (["--data-dir", "/does/not/exist"], "/does/not/exist"),
])
def test_bad_options_stop_before_anything_is_written(tmp_path, args, message, cli_here):
    out = tmp_path / "out"
    proc = cli_here("run", "quick", "--out", str(out), *args)
    assert proc.returncode == 2 and message in proc.stderr and not out.exists()


def test_summary_of_a_big_grid_says_how_many(tmp_path, cli_here):
    suite = tmp_path / "big.toml"
    suite.write_text('name = "big"\n[[experiment]]\nname = "x"\narchitecture = "64"\n'
                     '[experiment.grid]\nlr = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]\n'
                     'dropout = [0.0, 0.1, 0.2, 0.3, 0.4]\n')
    proc = cli_here("summary", str(suite))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Total params") == 12
    assert "and 38 more configurations (50 in all)" in proc.stdout


def test_same_suite_with_other_epochs_is_another_configuration(tmp_path, synthetic_dir, cli_here):
    suite = tmp_path / "twice.toml"
    suite.write_text(on_synthetic('name = "twice"\nseeds = 2\n[defaults]\ntrain_size = 1000\n'
                                  '[[experiment]]\nname = "m"\narchitecture = "784-16-10"\n',
                                  synthetic_dir))
    out = tmp_path / "out"
    assert cli_here("run", str(suite), "--out", str(out), "--epochs", "1").returncode == 0
    second = cli_here("run", str(suite), "--out", str(out), "--epochs", "2")
    assert second.returncode == 0, second.stderr
    rep = cli_here("report", str(out))
    assert rep.returncode == 0, rep.stderr

    def table(text):  # the comparison table's rows, as printed
        return [line for line in text.splitlines() if line.startswith("│ ")]

    rows = table(second.stdout)
    assert rows == table(rep.stdout)  # run and report agree
    assert len(rows) == 2
    assert any("m (epochs=1)" in r for r in rows) and any("m (epochs=2)" in r for r in rows)
    assert all("│ 2 │" in r for r in rows)  # n = 2 each: never the four runs averaged
    text = re.sub(r"<[^>]+>", "", (out / "report.html").read_text())
    assert "m (epochs=1)" in text and "m (epochs=2)" in text


def test_help_list_and_a_bad_flag_never_load_torch_or_matplotlib():
    """The commands that train nothing answer without torch's import (seconds on a small CPU)."""
    check = ("from mlplab.cli import cli\n"
             "for args in (['--help'], ['list'], ['run', '--help'], ['data', '--help']):\n"
             "    try:\n        cli.main(args, standalone_mode=False)\n"
             "    except SystemExit:\n        pass\n"
             "try:\n    cli.main(['run', '--bogus'], standalone_mode=False)\n"
             "except Exception as e:\n    assert type(e).__name__ == 'NoSuchOption', e\n"
             "else:\n    raise AssertionError('--bogus was accepted')\n")
    assert heavy_after(check) == set()
