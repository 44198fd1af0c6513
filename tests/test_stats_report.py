"""Statistics, the comparison table, the run store and the HTML report."""

import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlplab import plots, report, store
from mlplab.config import RunConfig
from mlplab.errors import UserError
from mlplab.records import RunRecord
from mlplab.stats import betainc, mean_std, t_two_sided_p, welch
from mlplab.train import train_group


@pytest.mark.parametrize("t, df, p", [(12.7062047, 1, 0.05), (2.22813885, 10, 0.05),
                                      (2.84533971, 20, 0.01), (1.95996398, 1e7, 0.05),
                                      (0.0, 5, 1.0)])
def test_t_distribution_matches_published_quantiles(t, df, p):
    assert t_two_sided_p(t, df) == pytest.approx(p, rel=1e-5, abs=1e-9)
    assert t_two_sided_p(-t, df) == pytest.approx(p, rel=1e-5, abs=1e-9)


def test_betainc_and_welch():
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-12)  # closed form: 1-(0.6^4+4*.4*.6^3)
    assert betainc(1, 1, 0.3) == pytest.approx(0.3)
    assert mean_std([1, 2, 3]) == (2.0, 1.0)
    # Welch's t for these samples: t = -1.8974, df = 5.882 -> p = 0.1075 (textbook example)
    assert welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == pytest.approx(0.1075, abs=5e-4)
    assert welch([0.98, 0.981, 0.979], [0.90, 0.901, 0.899]) < 1e-6
    assert math.isnan(welch([1.0], [1.0, 2.0]))


def _row(exp, seed, val_acc, status="finished", params=100):
    return RunRecord(run_id=f"{exp}-{seed}", experiment=exp, architecture="784-10",
                     params=params, seed=seed, epochs_run=3, val_loss=0.1, val_acc=val_acc,
                     test_loss=0.1, test_acc=val_acc - 0.001, train_seconds=1.0, status=status)


def test_comparison_ranks_by_validation_and_marks_ties_and_divergence():
    rows = ([_row("a", s, v) for s, v in enumerate([0.980, 0.982, 0.981])]
            + [_row("b", s, v) for s, v in enumerate([0.979, 0.983, 0.980])]
            + [_row("c", s, v) for s, v in enumerate([0.950, 0.951, 0.949])]
            + [_row("d", 0, 0.99), _row("d", 1, 0.098, "diverged")]
            + [_row("e", 0, 0.097, "diverged")] + [_row("f", s, 0.97) for s in range(3)]
            + [_row("f", 3, 0.1, "chance"), _row("f", 4, float("nan"), "diverged")])
    table = report.comparison(rows)
    assert [e.experiment for e in table] == ["d", "a", "b", "f", "c", "e"]
    by = {e.experiment: e for e in table}
    assert by["d"].marker == "best" and by["d"].n == 1 and by["d"].diverged == 1
    assert by["a"].marker == "n/a"  # best has one seed: no test possible
    assert by["e"].rank is None and not by["e"].ranked and by["e"].marker == ""
    shown = {r["experiment"]: r["n"] for r in report.table_rows(table)}
    assert shown["f"] == "3 of 5 (1 diverged, 1 at chance)" and shown["d"] == "1 of 2 (1 diverged)"
    assert shown["a"] == "3" and shown["e"] == "0 of 1 (1 diverged)"
    assert by["f"].mean["val_acc"] == pytest.approx(0.97)  # the failed seeds never enter the mean
    table = report.comparison([r for r in rows if r.experiment in "abc"])
    by = {e.experiment: e for e in table}
    assert by["a"].marker == "best"
    assert by["b"].marker == "≈" and by["b"].p > 0.05
    assert by["c"].marker == "" and by["c"].p < 0.001
    assert by["a"].mean["val_acc"] == pytest.approx(0.981) and by["a"].std["val_acc"] == pytest.approx(0.001)
    shown = report.table_rows(table)
    assert shown[0]["val_acc"] == "0.9810 ± 0.0010"
    by_shown = {r["experiment"]: r for r in shown}
    assert by_shown["b"]["vs_best"].startswith("≈ p=0.") and by_shown["c"]["vs_best"] == " p<0.01"


def test_chance_level_members_get_their_own_status(mnist_slice):
    stuck = RunConfig(architecture="784-32-10", optimizer="sgd", lr=1e-12, epochs=1, seed=0,
                      init="random_normal", init_stddev=1e-6)  # outputs ~0: uniform guesses
    fine = RunConfig(architecture="784-32-10", optimizer="sgd", lr=0.1, epochs=1, seed=1,
                     init="random_normal", init_stddev=0.05)
    r_stuck, r_fine = train_group([stuck, fine], mnist_slice)
    assert r_stuck.status == "chance" and r_stuck.history[-1]["val_acc"] < 0.15
    assert r_fine.status == "finished"


def _commit(db, out, seed):
    cfg = RunConfig(architecture="784-10", seed=seed)
    metrics = {"run_id": cfg.run_id, "experiment": cfg.name, "architecture": "784-10",
               "params": 7850, "seed": seed, "epochs_run": 1, "best_epoch": 1, "val_loss": 0.3,
               "val_acc": 0.9, "test_loss": 0.3, "test_acc": 0.9, "train_seconds": 1.0,
               "status": "finished", "device": "cpu", "per_class_acc": [0.9] * 10,
               "confusion_matrix": [[0] * 10] * 10}
    import torch

    hist = [{"epoch": 1, "train_loss": 0.4, "train_acc": 0.88, "val_loss": 0.3, "val_acc": 0.9,
             "lr": 1e-3, "seconds": 1.0}]
    store.commit_run(db, out, cfg, hist, metrics, {"w0": torch.zeros(784, 10)})
    return cfg


def test_store_recovers_after_a_crash_between_folder_and_database(tmp_path):
    out = tmp_path / "out"
    db = store.open_store(out)
    kept, lost = _commit(db, out, 0), _commit(db, out, 1)
    db.execute("DELETE FROM epochs WHERE run_id = ?", (lost.run_id,))
    db.execute("DELETE FROM runs WHERE run_id = ?", (lost.run_id,))  # as if killed before commit
    db.commit()
    db.close()
    (out / "runs" / ".deadbeef.tmp123").mkdir()  # a temp folder a killed writer left
    half = out / "runs" / "cafecafecafe"
    half.mkdir()
    (half / "config.json").write_text("{}")  # not a finished run: never counted, never deleted
    db = store.open_store(out)
    assert store.finished_ids(db) == {kept.run_id, lost.run_id}
    assert len(store.history(db, lost.run_id)) == 1
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(
        [kept.run_id, lost.run_id, half.name])
    assert [r.seed for r in store.query(db, ("seed=1",))] == [1]
    assert [r.seed for r in store.query(db, (), "-seed")] == [1, 0]
    with pytest.raises(UserError, match="unknown key 'colour'"):
        store.query(db, ("colour=red",))
    with pytest.raises(sqlite3.IntegrityError):  # a run id can never be recorded twice
        _commit(db, out, 0)


KILL_SUITE = """
name = "killme"
seeds = 2
[defaults]
train_size = 6000
epochs = 3
[[experiment]]
name = "a"
architecture = "784-64-10"
[[experiment]]
name = "b"
architecture = "784-96-10"
[[experiment]]
name = "c"
architecture = "784-128-10"
"""


@pytest.mark.slow
def test_sigkill_mid_group_then_resume_finishes_every_cell_exactly_once(tmp_path, mnist):
    suite = tmp_path / "kill.toml"
    suite.write_text(KILL_SUITE)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mlplab", "run", str(suite), "--out", str(out), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600  # bounds the wait only: a loaded machine may take long
    first: list = []
    try:
        while time.time() < deadline and not first:
            time.sleep(0.05)
            if (out / "mlplab.db").exists():
                with sqlite3.connect(out / "mlplab.db") as db:
                    try:
                        first = db.execute("SELECT run_id, finished_at FROM runs").fetchall()
                    except sqlite3.OperationalError:
                        pass
        # one group is committed; the next one is training right now
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert first and 0 < len(first) < 6, "the kill must land mid-suite"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"6 runs, {6 - len(first)} to train" in again.stderr or "to train" in again.stderr
    with sqlite3.connect(out / "mlplab.db") as db:
        final = db.execute("SELECT run_id, finished_at, status FROM runs").fetchall()
        per_run_epochs = db.execute("SELECT run_id, COUNT(*) FROM epochs GROUP BY run_id").fetchall()
    assert len(final) == 6 and len({r[0] for r in final}) == 6
    assert all(r[2] == "finished" for r in final)
    assert all(n == 3 for _, n in per_run_epochs) and len(per_run_epochs) == 6
    before = dict(first)
    for run_id, finished_at, _ in final:  # runs finished before the kill were not retrained
        if run_id in before:
            assert finished_at == before[run_id]
    folders = sorted(p.name for p in (out / "runs").iterdir())
    assert folders == sorted(r[0] for r in final)  # no temp or half-written folder left
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 7


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_is_self_contained_and_lists_every_configuration(tmp_path, mnist):
    from mlplab.suite import parse_suite
    from mlplab.sweep import run_suite

    suite = parse_suite({"seeds": 2, "defaults": {"train_size": 1500, "epochs": 2},
                         "experiment": [{"name": "small", "architecture": "784-32-10"},
                                        {"name": "wide", "architecture": "784-128-10",
                                         "grid": {"dropout": [0.0, 0.3]}}]}, "rep")
    out = tmp_path / "out"
    rows = run_suite(suite, out, device="cpu")
    paths = report.write_report(out)
    html = paths["html"].read_text()
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r'<td class="l">(.*?)</td>', html)]
    for name in ("small", "wide[dropout=0.0]", "wide[dropout=0.3]"):
        assert name in cells
    # a name may break after ',' or before '[', never at a hyphen: widths stay whole
    assert '<span class="nw">784-128-10</span>' in html
    assert "Welch" in html and "http://" not in html and "https://" not in html
    n_img = html.count('src="data:image/png;base64,')
    # curves (one grid of small multiples), overlays (the wide grid, all), params, confusion, gallery
    assert n_img == 1 + 2 + 1 + 1 + 1
    md = paths["md"].read_text()
    assert md.count("](report_files/") == n_img and "| # | Model |" in md
    # a plain name is its file name; others an ASCII slug + 8 hex digits of the name's hash
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(
        ["small.png", "overlay.png", *(f"{plots.slug(n)}.png" for n in ("wide[dropout=0.0]",
                                                                       "wide[dropout=0.3]"))])
    assert plots.slug("wide[dropout=0.0]").startswith("wide_dropout_0.0-")
    assert len(rows) == 6
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = Path(paths["html"]).resolve().as_uri()
    dom = subprocess.run([chromium, *flags, "--virtual-time-budget=5000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    assert f'data-images="{n_img}"' in dom and f'data-images-loaded="{n_img}"' in dom
    assert dom.count("<tr") == 1 + 3
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,2000", url],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 20_000


def test_runs_and_report_commands_need_a_store(tmp_path):
    with pytest.raises(UserError, match="no mlplab.db"):
        store.read_db(tmp_path)
    db = store.open_store(tmp_path)
    db.close()
    with pytest.raises(UserError, match="no finished runs"):
        report.write_report(tmp_path)
    assert json.loads(json.dumps(store.RESULT_FIELDS))[0] == "run_id"
