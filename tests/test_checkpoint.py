"""Epoch checkpoints: a group killed (SIGKILL) in the middle of its epochs and run again resumes
from its last checkpoint and ends bit-identical to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from functools import partial

import pytest
import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from mlplab.checkpoint import read_meta
from mlplab.fused import misfit
from mlplab.group import Group
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


@pytest.mark.slow
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


def _group_snapshot(cfgs, epoch=1):
    """(tensors, meta) as a group of `cfgs` would checkpoint them after `epoch`."""
    from mlplab.fused import Fused
    from mlplab.group import Group

    fused = Fused.start(Group(tuple(cfgs)), torch.zeros(1, 784, dtype=torch.uint8), torch.device("cpu"))
    for r in fused.results:
        r.history = [{"epoch": e, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0,
                      "val_acc": 0.5, "lr": 1e-3, "seconds": 0.1} for e in range(1, epoch + 1)]
    fused.epoch = epoch
    return fused.state()


TINY = {"seeds": 2, "defaults": {"train_size": 400, "epochs": 2},
        "experiment": [{"name": "q", "architecture": "784-8-10", "batch_norm": True}]}


def _not_fitting(tensors, meta):
    """Checkpoints of the right group that do not fit it, by what is wrong."""
    missing = {k: v for k, v in tensors.items() if k != "model.w0"}
    wrong = {**tensors, "model.w1": torch.zeros(2, 9, 10)}
    return {"a missing tensor": (missing, meta, "tensor model.w0 is missing"),
            "another shape": (wrong, meta, "model.w1 has shape [2, 9, 10]"),
            "a newer format": (tensors, {**meta, "format": 3, "mlplab": "9.0"}, "checkpoint format 3"),
            "configs not its members'": (tensors, {**meta, "configs": meta["configs"][::-1]},
                                         "its configurations are not its members'"),
            # a header is untrusted: every value of the right type and range, or set aside
            # before training could trip on it (found by review: these crashed or trained on)
            "an epoch past the last": (tensors, {**meta, "epoch": 3}, "its header is inconsistent"),
            "an epoch that is a bool": (tensors, {**meta, "epoch": True}, "its header is inconsistent"),
            "a number as a string": (tensors, _member(meta, train_seconds="1"), "state is malformed"),
            "an integer no store holds": (tensors, _member(meta, best_epoch=10**400), "state is malformed"),
            "an unknown status": (tensors, _member(meta, status="bogus"), "state is malformed"),
            "a history that is no list": (tensors, _member(meta, history={}), "history is malformed"),
            "a header nested too deep": (tensors, "[" * 100_000, "unreadable")}


def _member(meta, **changed):
    """meta with the first member's header fields changed."""
    return {**meta, "members": [{**meta["members"][0], **changed}, *meta["members"][1:]]}


def test_checkpoints_that_do_not_fit_are_set_aside_with_one_line(tmp_path, caplog):
    from mlplab.checkpoint import Checkpointer

    cfgs = parse_suite(TINY, "q").cells()
    ids = [c.run_id for c in cfgs]
    tensors, meta = _group_snapshot(cfgs)
    ck = Checkpointer.for_group(tmp_path / "checkpoints", ids, 0)
    fits = partial(misfit, group=Group(tuple(cfgs)))
    assert ck.save(tensors, meta) is None
    assert ck.load(ids, fits)[1]["epoch"] == 1  # a checkpoint that fits is resumed
    # another mlplab version, or format 1 (no configs in its header), fits all the same
    older = {k: v for k, v in meta.items() if k not in ("format", "configs")}
    for m in ({**meta, "mlplab": "0.0.1"}, older):
        assert ck.save(tensors, m) is None and ck.load(ids, fits)[1]["epoch"] == 1
    cases = {**_not_fitting(tensors, meta),
             "another group's": (tensors, meta, "another group's"),
             "unreadable": (None, None, "unreadable")}
    for what, (t, m, why) in cases.items():
        if t is None:
            ck.path.write_bytes(b"garbage")
        elif isinstance(m, str):  # a header that is not JSON mlplab wrote
            ck.path.write_bytes(save_safetensors(t, metadata={"mlplab": m}))
        else:
            assert ck.save(t, m) is None, what
        caplog.clear()
        asked = list(reversed(ids)) if what == "another group's" else ids
        assert ck.load(asked, fits) is None, what
        assert not ck.path.exists() and ck.path.with_name(ck.path.name + ".bad").is_file(), what
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and why in lines[0] and "starts from its first epoch" in lines[0], \
            (what, lines)


def test_a_run_with_a_checkpoint_that_does_not_fit_trains_from_scratch(tmp_path, mnist, caplog):
    """The group restarts from its first epoch (the same numbers as a run that never had the
    file), and a temporary file that a killed checkpoint write left is removed by the next run."""
    from mlplab.checkpoint import Checkpointer

    suite = parse_suite(TINY, "q")
    cfgs = suite.cells()
    ids = [c.run_id for c in cfgs]
    ref = tmp_path / "ref"
    run_suite(suite, ref, device="cpu", checkpoint_every=0)
    out = tmp_path / "out"
    wrong, meta, _ = _not_fitting(*_group_snapshot(cfgs))["another shape"]
    assert Checkpointer.for_group(out / "checkpoints", ids, 0).save(wrong, meta) is None
    orphan = out / "checkpoints" / ".0123456789abcdef.safetensors.tmp999999.a1b2c3"
    orphan.write_bytes(b"half a checkpoint")  # kill -9 in the middle of a write
    caplog.clear()
    rows = run_suite(suite, out, device="cpu", checkpoint_every=0)
    assert [r["status"] for r in rows] == ["finished", "finished"]
    assert [r["epochs_run"] for r in rows] == [2, 2]
    lines = [r.getMessage() for r in caplog.records if "does not fit" in r.getMessage()]
    assert len(lines) == 1 and "model.w1 has shape" in lines[0], lines
    assert not orphan.exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == [
        Checkpointer.for_group(out / "checkpoints", ids, 0).path.name + ".bad"]
    a, b = _state(out), _state(ref)
    assert sorted(a) == sorted(b) == sorted(ids)
    for run_id in a:
        assert a[run_id][0] == b[run_id][0]
        assert all(torch.equal(a[run_id][1][k], t) for k, t in b[run_id][1].items())


def test_a_checkpoint_written_by_89f242a_resumes_bit_identical(tmp_path):
    """tests/fixtures/checkpoint_89f242a.safetensors: format 1 (no configs, no version in its
    header), two members paused after epoch 1 of 3 (fixtures/make_checkpoint_89f242a.py made it,
    on the same arithmetic images). This version resumes it, and ends where a whole run ends."""
    import shutil
    from pathlib import Path

    from mlplab.checkpoint import Checkpointer
    from mlplab.train import train_group

    sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
    try:
        from make_checkpoint_89f242a import configs, splits
    finally:
        sys.path.pop(0)
    fixture = Path(__file__).parent / "fixtures" / "checkpoint_89f242a.safetensors"
    assert "format" not in read_meta(fixture) and read_meta(fixture)["epoch"] == 1
    ck = Checkpointer(tmp_path / "g.safetensors", every=float("inf"))
    shutil.copy(fixture, ck.path)
    events, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # as it was written: the same reduction order
    try:
        resumed = train_group(configs(), splits(), progress=events.append, checkpoint=ck)
        whole = train_group(configs(), splits())
    finally:
        torch.set_num_threads(threads)
    assert {"event": "log", "message": "resumed from the checkpoint after epoch 1",
            "resumed": 1} in events
    rows = lambda r: [{k: v for k, v in h.items() if k != "seconds"} for h in r.history]  # noqa: E731
    # another CPU's float arithmetic (SIMD width) may round epoch 1 differently than the one
    # that wrote the file: then the epochs after it can only agree closely, not to the last bit
    same_cpu = [m["history"][0]["val_loss"] for m in read_meta(fixture)["members"]] == \
               [r.history[0]["val_loss"] for r in whole]
    for a, b in zip(resumed, whole, strict=True):
        assert a.status == b.status and len(a.history) == 3  # (chance: the images are noise)
        assert a.state.keys() == b.state.keys()
        if same_cpu:
            assert rows(a) == rows(b)
            assert all(torch.equal(a.state[k], b.state[k]) for k in b.state)
        else:
            for x, y in zip(rows(a), rows(b), strict=True):
                assert x == pytest.approx(y, rel=1e-3)
