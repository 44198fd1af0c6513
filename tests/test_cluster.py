"""A suite on a local Dask cluster of two worker processes on 127.0.0.1, with one worker killed
while it trains: every run finishes exactly once and equals the in-process result."""

import os
import signal
import sqlite3
import threading
import time

import pytest

distributed = pytest.importorskip("distributed")

from mlplab.suite import parse_suite  # noqa: E402
from mlplab.sweep import run_suite  # noqa: E402

SUITE = {"seeds": 2, "defaults": {"train_size": 4000, "epochs": 3, "batch_size": 100},
         "experiment": [{"name": f"w{w}", "architecture": f"784-{w}-10"} for w in (48, 64, 80, 96)]}


def _kill_a_busy_worker(client, pids, killed):
    """Wait until a worker is running a group, let it train a moment, then SIGKILL it."""
    deadline = time.time() + 120
    while time.time() < deadline:
        busy = [w for w, keys in client.processing().items() if keys]
        if busy:
            time.sleep(0.5)
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append(busy[0])
            return
        time.sleep(0.05)


def test_cluster_run_survives_a_killed_worker_and_equals_in_process(tmp_path, mnist):
    suite = parse_suite(SUITE, "dist")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        pids = client.run(os.getpid)
        killed: list = []
        killer = threading.Thread(target=_kill_a_busy_worker, args=(client, pids, killed))
        killer.start()
        events: list = []
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


def test_a_tls_cluster_trains_and_plain_tcp_elsewhere_is_warned(tmp_path, mnist):
    pytest.importorskip("cryptography")
    from distributed.security import Security

    from mlplab.cluster import plain_tcp_warning
    from mlplab.errors import UserError

    sec = Security.temporary()  # a self-signed CA and certificates, for 127.0.0.1 only
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", protocol="tls", security=sec,
                                       dashboard_address=None)
    suite = parse_suite({"seeds": 1, "defaults": {"train_size": 1000, "epochs": 1},
                         "experiment": [{"name": "t", "architecture": "784-16-10"}]}, "tls")
    try:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        with pytest.raises(UserError, match="tls:// scheduler needs --tls-ca"):
            run_suite(suite, tmp_path / "no-creds", cluster=cluster.scheduler_address)
        assert not (tmp_path / "no-creds").exists()  # refused before anything was written
        rows = run_suite(suite, tmp_path / "tls", cluster=cluster.scheduler_address, security=sec)
    finally:
        cluster.close()
    assert len(rows) == 1 and rows[0]["status"] == "finished"
    assert plain_tcp_warning("tcp://10.1.2.3:8786") and plain_tcp_warning("192.0.2.7:8786")
    assert plain_tcp_warning("tcp://127.0.0.1:8786") is None
    assert plain_tcp_warning("tls://10.1.2.3:8786") is None


def test_ctrl_c_under_workers_is_one_line(tmp_path, mnist):
    import subprocess
    import sys

    suite = tmp_path / "w.toml"
    suite.write_text('name = "w"\nseeds = 2\n[defaults]\ntrain_size = 20000\nepochs = 200\n'
                     '[[experiment]]\nname = "a"\narchitecture = "784-256-10"\n')
    proc = subprocess.Popen([sys.executable, "-m", "mlplab", "run", str(suite), "--out",
                             str(tmp_path / "o"), "--workers", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "o").glob("mlplab.db")):
        time.sleep(0.2)
    time.sleep(4)  # the group is training on a worker
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: every finished run is saved")
    assert "WARNING" not in err and "Traceback" not in err, err[-2000:]
