"""End to end through the real command line: a Kaggle "Digit Recognizer" folder (train.csv with
labels, test.csv without) built from real MNIST -> a run -> submission.csv; the same file (and
Parquet) through Run.predict."""

import csv
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import mlplab

N_TRAIN, N_TEST = 2400, 300


def mlplab_cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "mlplab", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **env}, timeout=600)


def write_csv(path, x, y=None):
    names = (["label"] if y is not None else []) + [f"pixel{i}" for i in range(784)]
    rows = x if y is None else np.concatenate([y[:, None], x], 1)
    path.write_text(",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in rows.tolist()) + "\n")


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory, mnist):
    tmp = tmp_path_factory.mktemp("kaggle")
    folder = tmp / "digit-recognizer"
    folder.mkdir()
    write_csv(folder / "train.csv", mnist.x_train[:N_TRAIN].numpy(), mnist.y_train[:N_TRAIN].numpy())
    write_csv(folder / "test.csv", mnist.x_test[:N_TEST].numpy())
    suite = tmp / "kaggle.toml"
    suite.write_text(f'name = "kaggle"\n[[experiment]]\nname = "mlp"\narchitecture = "784-64-10"\n'
                     f'dataset = "{folder}"\nepochs = 2\nval_size = 300\n')
    proc = mlplab_cli("run", str(suite), "--out", str(tmp / "out"), "--device", "cpu",
                      MLPLAB_HOME=str(tmp / "home"))  # a parse cache of this test's own
    return tmp, folder, proc


def test_run_on_a_kaggle_folder_says_what_it_held_out(kaggle):
    tmp, _, proc = kaggle
    assert proc.returncode == 0, proc.stderr
    assert "test.csv has no labels (a Kaggle test file)" in proc.stderr
    held = re.search(r"held out (\d+) of 2,400 images as the test set \(a stratified seventh", proc.stderr)
    assert held and abs(int(held.group(1)) - N_TRAIN / 7) < 10, proc.stderr
    rows = list(csv.DictReader(open(tmp / "out" / "results.csv")))
    assert len(rows) == 1 and float(rows[0]["test_acc"]) > 0.6


def test_kaggle_submission_from_test_csv(kaggle, mnist):
    tmp, folder, _ = kaggle
    run_id = next(csv.DictReader(open(tmp / "out" / "results.csv")))["run_id"]
    sub = tmp / "submission.csv"
    proc = mlplab_cli("predict", run_id[:8], str(folder / "test.csv"), "--kaggle", "--to", str(sub),
                      "--out", str(tmp / "out"))
    assert proc.returncode == 0, proc.stderr
    assert f"({N_TEST} rows)" in proc.stdout
    rows = list(csv.reader(open(sub)))
    assert rows[0] == ["ImageId", "Label"] and len(rows) == N_TEST + 1
    assert [int(r[0]) for r in rows[1:]] == list(range(1, N_TEST + 1))
    labels = np.array([int(r[1]) for r in rows[1:]])
    assert (labels == mnist.y_test[:N_TEST].numpy()).mean() > 0.6
    # the same predictions on standard output, and from Python for the CSV and for Parquet
    out = mlplab_cli("predict", run_id, str(folder / "test.csv"), "--kaggle", "--out", str(tmp / "out"))
    assert out.stdout == sub.read_text()
    best = mlplab.load(tmp / "out").best()
    assert np.array_equal(best.predict(folder / "test.csv"), labels)
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from PIL import Image

    pngs = []
    for img in mnist.x_test[:N_TEST].numpy().reshape(-1, 28, 28):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        pngs.append({"bytes": buf.getvalue(), "path": None})
    pq.write_table(pa.table({"image": pngs}), tmp / "test.parquet")
    assert np.array_equal(best.predict(str(tmp / "test.parquet")), labels)


def test_submission_writes_through_a_link_and_refuses_bad_targets(kaggle, tmp_path, cli_here):
    # the submission itself comes from the real command line above; here: where it is written
    tmp, folder, _ = kaggle
    run_id = next(csv.DictReader(open(tmp / "out" / "results.csv")))["run_id"]
    target = tmp_path / "real.csv"
    target.write_text("old")
    (tmp_path / "link.csv").symlink_to(target)
    args = ("predict", run_id, str(folder / "test.csv"), "--out", str(tmp / "out"))
    assert cli_here(*args, "--kaggle", "--to", str(tmp_path / "link.csv")).returncode == 0
    assert (tmp_path / "link.csv").is_symlink() and target.read_text().startswith("ImageId,Label\n")
    for extra, message in ((("--to", str(tmp_path / "x.csv")), "--to goes with --kaggle"),
                           (("--kaggle", "--to", str(tmp_path / "no" / "x.csv")), "does not exist")):
        proc = cli_here(*args, *extra)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv"]
