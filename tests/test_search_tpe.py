"""[search] method = "tpe": Optuna proposes batches (constant liar) that mlplab trains as fused
groups with halving inside the batch; proposals a pure function of (seed, batch, earlier
outcomes), so a run resumed after kill -9 asks the same batches; Optuna missing or a bad table:
one line, exit 2, nothing written."""

import json
import os
import subprocess
import sys
import tomllib

import pytest
from procs import kill_at

from mlplab.errors import UserError
from mlplab.search import SearchSpec
from mlplab.suite import load_suite, parse_suite

pytest.importorskip("optuna")
from mlplab import search_tpe  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SPACE = {"lr": {"log_uniform": [1e-4, 1e-1]}, "dropout": {"uniform": [0.0, 0.5]},
         "architecture": {"choice": ["784-32-10", "784-64-10"]}, "patience": {"int_uniform": [2, 5]}}

TOY = """
name = "tpe"
seeds = 1
[defaults]
train_size = 600
val_size = 300
epochs = 3
batch_size = 100
architecture = "784-32-10"
[search]
method = "tpe"
trials = 4
batch = 2
seed = 3
rule = "top"
eta = 2
[space]
lr = { log_uniform = [1e-4, 1e-1] }
dropout = { uniform = [0.0, 0.5] }
"""


def _told(proposals, value=0.5, state="COMPLETE", epoch=3):
    return [{"values": v, "state": state, "value": value + i / 100, "epoch": epoch}
            for i, v in enumerate(proposals)]


def test_proposals_are_reproducible_inside_the_space_and_follow_the_outcomes():
    spec = SearchSpec(method="tpe", trials=40, batch=4, seed=7)
    first = search_tpe.propose(SPACE, spec, 0, [])
    assert first == search_tpe.propose(SPACE, spec, 0, []) and len(first) == 4
    assert first != search_tpe.propose(SPACE, SearchSpec(method="tpe", trials=40, batch=4, seed=8), 0, [])
    for v in first:
        assert 1e-4 <= v["lr"] <= 1e-1 and 0 <= v["dropout"] <= 0.5 and v["patience"] in range(2, 6)
        assert v["architecture"] in ("784-32-10", "784-64-10") and len(f"{v['lr']:.10g}") <= 10
    # batch 3 after 12 outcomes (past TPE's 10 random start-up trials): a model-based proposal,
    # the same for the same history, different when the history says otherwise
    told = []
    for b in range(3):
        told += _told(search_tpe.propose(SPACE, spec, b, told))
    again = search_tpe.propose(SPACE, spec, 3, told)
    assert again == search_tpe.propose(SPACE, spec, 3, list(told))
    flipped = [{**t, "value": 1 - t["value"]} for t in told]
    assert again != search_tpe.propose(SPACE, spec, 3, flipped)
    # pruned members are told as pruned, with their value at the rung; failures as failed
    told[0].update(state="PRUNED", epoch=1)
    told[1].update(state="FAIL", value=None)
    assert len(search_tpe.propose(SPACE, spec, 3, told)) == 4
    last = SearchSpec(method="tpe", trials=10, batch=4, seed=7)
    assert len(search_tpe.propose(SPACE, last, 2, [])) == 2  # the last batch: what is left


def test_outcome_is_the_seed_mean_at_the_end_or_at_the_rung():
    cfg = parse_suite(tomllib.loads(TOY.replace("seeds = 1", "seeds = 2")), "t")
    cfg = cfg.model_copy(update={"proposals": [(1, {"lr": 0.01, "dropout": 0.1})]}).cells()
    h = lambda *a: [{"epoch": i + 1, "val_acc": x, "val_loss": 1 - x} for i, x in enumerate(a)]  # noqa: E731
    ids = [c.run_id for c in cfg]
    done = search_tpe.outcome({}, cfg, {ids[0]: (h(.5, .6, .7), "finished"),
                                        ids[1]: (h(.5, .6, .9), "finished")}, "val_acc")
    assert done["state"] == "COMPLETE" and done["value"] == pytest.approx(0.8)
    pruned = search_tpe.outcome({}, cfg, {i: (h(.5), "pruned") for i in ids}, "val_acc")
    assert (pruned["state"], pruned["epoch"], pruned["value"]) == ("PRUNED", 1, 0.5)
    bad = search_tpe.outcome({}, cfg, {ids[0]: (h(.5), "diverged"), ids[1]: (h(.5, .6, .7), "finished")},
                             "val_acc")
    assert bad["state"] == "FAIL" and bad["value"] is None


BAD = [("trials = 0\nbatch = 1", "trials"), ("trials = 4\nbatch = 0", "batch"),
       ("trials = 4\nbatch = 9", "batch ≤ trials"),
       ('trials = 4\nbatch = "2"', "batch"), ("", "trials = N and batch = K")]


@pytest.mark.parametrize("text,what", BAD)
def test_bad_tpe_search_is_one_line(tmp_path, text, what):
    body = TOY.replace("trials = 4\nbatch = 2\n", text + "\n")
    with pytest.raises(UserError) as e:
        parse_suite(tomllib.loads(body), "t")
    assert what in str(e.value) and "\n" not in str(e.value)


def test_tpe_needs_a_space_and_one_experiment():
    for body, what in ((TOY.split("[space]")[0], "needs a [space]"),
                       (TOY + '[grid]\nbatch_norm = [false, true]\n', "one experiment and no grid"),
                       (TOY.replace('method = "tpe"\n', 'method = "random"\nsamples = 2\n'),
                        "only method = \"tpe\"")):
        with pytest.raises(UserError) as e:
            parse_suite(tomllib.loads(body), "t")
        assert what in str(e.value), str(e.value)


def test_optuna_missing_is_one_line_exit_2_nothing_written(tmp_path, monkeypatch, cli_here):
    suite = tmp_path / "s.toml"
    suite.write_text(TOY)
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    from mlplab.sweep import run_suite

    with pytest.raises(UserError, match=r'pip install "mlplab\[optuna\]"'):
        run_suite(load_suite(str(suite)), tmp_path / "o", device="cpu")
    r = cli_here("run", suite, "--out", tmp_path / "o")  # optuna still unimportable
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "mlplab[optuna]" in r.stderr and not (tmp_path / "o").exists()


def _cli(out, suite):
    return [sys.executable, "-m", "mlplab", "run", str(suite), "--out", str(out), "--device", "cpu",
            "--checkpoint-every", "0"]


def _state(out):
    from mlplab.store import read_db, rows

    db = read_db(out)
    found = {r["experiment"]: (r["status"], r["epochs_run"], round(r["val_acc"], 6)) for r in rows(db)}
    db.close()
    log = json.loads((out / "search.json").read_text())
    return found, log


@pytest.mark.slow
def test_batches_fuse_by_shape_prune_and_resume_after_kill_9(tmp_path, mnist):
    suite = tmp_path / "s.toml"
    suite.write_text(TOY)
    ref = subprocess.run(_cli(tmp_path / "ref", suite), env=ENV, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    found, log = _state(tmp_path / "ref")
    assert [n.split("[")[0] for n in sorted(found)] == ["tpe #1", "tpe #2", "tpe #3", "tpe #4"]
    assert all("[lr=" in n and ",dropout=" in n for n in found)
    assert [b["trials"] for b in log["batches"]] == [[1, 2], [3, 4]]
    # one shape: each batch of 2 trains as one fused group; eta 2 prunes one of 2 at epoch 1
    assert "784-32-10 x2" in ref.stderr and ref.stderr.count("784-32-10 x1") == 0
    # rungs at epochs 1 and 2 in each batch (eta 2 below 3 epochs); at 2 one contender is left
    assert [(r["batch"], r["epoch"]) for r in log["rungs"]] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [r["contenders"] for r in log["rungs"]] == [2, 1, 2, 1]
    assert sorted(s for s, _, _ in found.values()) == ["finished", "finished", "pruned", "pruned"]
    assert log["model_epochs"] == 2 * (1 + 3) and log["full_grid_model_epochs"] == 12
    assert "successive halving: 8 model-epochs of the 12" in ref.stdout
    # killed in the second batch, then rerun: the same batches, nothing asked differently
    killed = tmp_path / "killed"
    kill_at(_cli(killed, suite), ENV, "batch 2 of 2")
    again = subprocess.run(_cli(killed, suite), env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    f2, log2 = _state(killed)
    assert f2 == found and log2["rungs"] == log["rungs"] and log2["batches"] == log["batches"]
