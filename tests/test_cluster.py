"""A suite on a local Dask cluster of two worker processes on 127.0.0.1, with one worker killed
while it trains: every run finishes exactly once and equals the in-process result."""

import os
import signal
import sqlite3
import threading
import time

import pytest

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow  # Dask worker processes

import synthetic  # noqa: E402

from mlplab.suite import parse_suite  # noqa: E402
from mlplab.sweep import run_suite  # noqa: E402

# on the synthetic set: what is checked is where runs train and that they equal in-process ones
SUITE = {"seeds": 2, "defaults": {"train_size": 3000, "epochs": 3, "batch_size": 100,
                                  "dataset": synthetic.path(), "val_size": 1000},
         "experiment": [{"name": f"w{w}", "architecture": f"784-{w}-10"} for w in (48, 64, 80, 96)]}


def _kill_a_training_worker(events, pids, killed):
    """Wait (deadline-bounded) for a worker to report a finished epoch, then SIGKILL it: its group
    (or the next one it took) is rescheduled and resumes from its checkpoint elsewhere."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        sent = [e["worker"] for e in list(events) if e["event"] == "epoch" and e.get("worker") in pids]
        if sent:
            os.kill(pids[sent[0]], signal.SIGKILL)
            killed.append(sent[0])
            return
        time.sleep(0.05)


def test_cluster_run_survives_a_killed_worker_and_equals_in_process(tmp_path):
    suite = parse_suite(SUITE, "dist")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        pids = client.run(os.getpid)
        killed: list = []
        events: list = []
        killer = threading.Thread(target=_kill_a_training_worker, args=(events, pids, killed),
                                  daemon=True)
        killer.start()
        rows = run_suite(suite, tmp_path / "dist", cluster=cluster.scheduler_address, threads=2,
                         progress=events.append, checkpoint_every=0)  # the rescheduled group resumes
        killer.join()
    finally:
        client.close()
        cluster.close()
    assert killed, "a worker must have been killed mid-group"
    # the workers' epochs reached the driver, tagged with their group
    worker_epochs = [e for e in events if e["event"] == "epoch" and "group" in e]
    assert worker_epochs and {e["epochs"] for e in worker_epochs} == {3}
    with sqlite3.connect(tmp_path / "dist" / "mlplab.db") as db:
        ids = [r[0] for r in db.execute("SELECT run_id FROM runs")]
        epochs = db.execute("SELECT COUNT(*) FROM epochs").fetchone()[0]
    assert len(ids) == len(set(ids)) == 8 and epochs == 8 * 3
    assert not (tmp_path / "dist" / "checkpoints").exists()  # every group committed, none left
    local = run_suite(suite, tmp_path / "local", device="cpu")
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in local]
    for a, b in zip(rows, local, strict=True):
        assert a["status"] == b["status"] == "finished"
        for key in ("val_loss", "val_acc", "test_loss", "test_acc", "epochs_run"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (a["experiment"], key)


def test_a_tls_cluster_trains_and_plain_tcp_elsewhere_is_warned(tmp_path):
    pytest.importorskip("cryptography")
    from distributed.security import Security

    from mlplab.cluster import plain_tcp_warning
    from mlplab.errors import UserError

    sec = Security.temporary()  # a self-signed CA and certificates, for 127.0.0.1 only
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", protocol="tls", security=sec,
                                       dashboard_address=None)
    suite = parse_suite({"seeds": 1, "defaults": {"train_size": 1000, "epochs": 1,
                                                  "dataset": synthetic.path(), "val_size": 1000},
                         "experiment": [{"name": "t", "architecture": "784-16-10"}]}, "tls")
    try:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        with pytest.raises(UserError, match="tls:// scheduler needs security"):
            run_suite(suite, tmp_path / "no-creds", cluster=cluster.scheduler_address)
        assert not (tmp_path / "no-creds").exists()  # refused before anything was written
        rows = run_suite(suite, tmp_path / "tls", cluster=cluster.scheduler_address, security=sec)
    finally:
        cluster.close()
    assert len(rows) == 1 and rows[0]["status"] == "finished"
    assert plain_tcp_warning("tcp://10.1.2.3:8786") and plain_tcp_warning("192.0.2.7:8786")
    assert plain_tcp_warning("tcp://127.0.0.1:8786") is None
    assert plain_tcp_warning("tls://10.1.2.3:8786") is None


def test_ctrl_c_under_workers_is_one_line_and_saves(tmp_path):
    """Ctrl-C in a terminal reaches the whole process group (driver and local workers): the
    group on a worker saves its last finished epoch and the user sees only mlplab's lines."""
    import subprocess
    import sys

    from mlplab.checkpoint import read_meta

    suite = tmp_path / "w.toml"
    suite.write_text(synthetic.on_synthetic(
        'name = "w"\nseeds = 2\n[defaults]\ntrain_size = 3000\nepochs = 500\n'
        '[[experiment]]\nname = "a"\narchitecture = "784-64-10"\n'))
    proc = subprocess.Popen([sys.executable, "-m", "mlplab", "run", str(suite), "--out",
                             str(tmp_path / "o"), "--workers", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300  # bounds the wait only: the signal follows an epoch line
    while time.monotonic() < deadline and proc.poll() is None and not any(
            "epoch 1/500" in line for line in list(lines)):
        time.sleep(0.05)
    assert proc.poll() is None, "".join(lines)[-2000:]
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: driver and workers
    proc.wait(timeout=300)
    reader.join(timeout=60)
    err = [line.rstrip("\n") for line in lines if line.strip()]
    assert proc.returncode == 130, err[-20:]
    (ckpt,) = (tmp_path / "o" / "checkpoints").glob("*.safetensors")
    epoch = read_meta(ckpt)["epoch"]
    assert epoch >= 1
    assert err[-1] == (f"interrupted: saved a at epoch {epoch}/500 in {tmp_path / 'o' / 'checkpoints'}"
                       "; every finished run is saved; run the same command again to resume")
    # every other line is mlplab's own progress: no distributed log, warning or traceback
    mine = ("suite w:", "  1 groups submitted to", "  group 1/1  epoch ")
    assert all(line.startswith(mine) for line in err[:-1]), err


def test_an_address_dask_cannot_parse_is_one_line_not_an_internal_error():
    from mlplab.cluster import connect
    from mlplab.errors import UserError

    with pytest.raises(UserError, match="cluster bogus: no Dask scheduler answered"):
        connect("bogus", None)
