"""Epoch checkpoints: a group killed (SIGKILL) in the middle of its epochs and run again resumes
from its last checkpoint and ends bit-identical to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from mlplab.checkpoint import read_meta
from mlplab.suite import parse_suite
from mlplab.sweep import run_suite

SUITE = ('name = "ck"\nseeds = 2\n[defaults]\ntrain_size = 8000\nepochs = 5\nbatch_norm = true\n'
         '[[experiment]]\nname = "m"\narchitecture = "784-256-64-10"\n[experiment.grid]\n'
         'dropout = [0.0, 0.3]\n')


def _state(out):
    db = {}
    for run in sorted((out / "runs").iterdir()):
        hist = [{k: v for k, v in row.items() if k != "seconds"}
                for row in __import__("csv").DictReader(open(run / "history.csv"))]
        db[run.name] = (hist, load_file(str(run / "weights.safetensors")))
    return db


def test_kill_9_in_epoch_3_of_5_then_rerun_is_bit_identical(tmp_path, mnist):
    suite = tmp_path / "ck.toml"
    suite.write_text(SUITE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # same threads in every process: same numbers
    cmd = [sys.executable, "-m", "mlplab", "run", str(suite), "--checkpoint-every", "0", "--device", "cpu"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline, epoch = time.time() + 300, 0
    while time.time() < deadline and proc.poll() is None:  # wait for the checkpoint of epoch 2
        files = list((killed / "checkpoints").glob("*.safetensors")) if killed.exists() else []
        if files:
            try:
                epoch = read_meta(files[0])["epoch"]
            except Exception:  # being written right now: look again
                epoch = 0
            if epoch >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None and epoch >= 2, "the group must still be training after epoch 2"
    os.kill(proc.pid, signal.SIGKILL)  # in epoch 3 (or 4) of 5
    proc.wait()
    assert not any((killed / "runs").iterdir())  # nothing finished before the kill
    again = subprocess.run([*cmd, "--out", str(killed)], env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"resumed from the checkpoint after epoch {epoch}" in again.stderr
    assert not (killed / "checkpoints").exists()  # gone once the group is committed
    whole = tmp_path / "whole"
    ref = subprocess.run([*cmd, "--out", str(whole)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert ref.returncode == 0, ref.stderr
    a, b = _state(killed), _state(whole)
    assert sorted(a) == sorted(b) and len(a) == 4
    for run_id in a:
        assert a[run_id][0] == b[run_id][0], run_id  # every epoch's metrics, to the last digit
        for name, t in b[run_id][1].items():
            assert torch.equal(a[run_id][1][name], t), (run_id, name)


def test_a_checkpoint_of_another_group_is_ignored(tmp_path, mnist):
    from mlplab.checkpoint import Checkpointer

    ck = Checkpointer(tmp_path / "x.safetensors", 0)
    assert ck.save({"a": torch.zeros(2)}, {"run_ids": ["a", "b"], "epoch": 1}) is None
    assert ck.load(["a", "b"])[1]["epoch"] == 1
    assert ck.load(["a", "c"]) is None  # other members: start from the first epoch
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    assert ck.load(["a", "b"]) is None  # unreadable: start over, never crash
    suite = parse_suite({"seeds": 1, "defaults": {"train_size": 500, "epochs": 1},
                         "experiment": [{"name": "q", "architecture": "784-8-10"}]}, "q")
    run_suite(suite, tmp_path / "o", device="cpu", checkpoint_every=None)
    assert not (tmp_path / "o" / "checkpoints").exists()
