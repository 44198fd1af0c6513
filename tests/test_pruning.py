"""The rung decision (pruning.py) on hand-made histories: a slow starter within seed noise of the
k-th best is kept, a clearly worse one is pruned, the reasons are said; [search] rule/alpha and
strict types; and the replay benchmark's code (bench/search_replay.py) on a small synthetic grid."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mlplab import pruning
from mlplab.errors import UserError
from mlplab.search import SearchSpec as spec
from mlplab.search import parse_search

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def _h(*accs):
    return [{"epoch": i + 1, "val_acc": a, "val_loss": 1 - a} for i, a in enumerate(accs)]


def _seeds(table):
    """{config: [per-seed value at the rung (epoch 2)]} -> decide's input."""
    return {k: [(_h(0.5, v), "running") for v in vals] for k, vals in table.items()}


# six configurations x 3 seeds at epoch 2; eta 3 keeps the best 2 ("a", "b") by rule "top"
RUNG = {
    "a": [0.951, 0.949, 0.950],
    "b": [0.946, 0.944, 0.942],  # 2nd: mean 0.944
    "slow": [0.945, 0.935, 0.940],  # a slow starter: mean 0.940, 0.004 behind, seeds scatter 0.005
    "c": [0.920, 0.915, 0.925],  # 0.024 behind: far outside the noise
    "d": [0.90, 0.91, 0.905],
    "e": [0.80, 0.81, 0.79],
}
EPOCHS = dict.fromkeys(RUNG, 9)


def test_a_slow_starter_within_noise_is_kept_a_clearly_worse_one_pruned():
    top = pruning.decide(2, _seeds(RUNG), EPOCHS, eta=3, metric="val_acc", rule="top")
    assert top.kept == ["a", "b"] and "slow" in top.pruned
    noise = pruning.decide(2, _seeds(RUNG), EPOCHS, eta=3, metric="val_acc", rule="noise", alpha=0.05)
    assert noise.kept == ["a", "b", "slow"] and noise.pruned == ["c", "d", "e"]
    assert noise.best == 2 and noise.within_noise == ["slow"]
    # the pooled seed sd: every configuration's within-seed spread, 2 degrees of freedom each
    var = [np.var(v, ddof=1) for v in RUNG.values()]
    assert noise.sd == pytest.approx(float(np.sqrt(np.mean(var))))
    assert noise.margin == pytest.approx(pruning.t_critical(0.05, 12) * noise.sd * np.sqrt(2 / 3))
    assert noise.why() == (f"kept 3 of 6 at epoch 2: the best 2, and 1 within noise of the 2nd "
                           f"(seed sd {noise.sd:.4f}, pooled; margin {noise.margin:.4f})")
    # a stricter test (smaller alpha) keeps at least as much; by val_loss the same decision
    strict = pruning.decide(2, _seeds(RUNG), EPOCHS, 3, "val_acc", "noise", alpha=1e-6)
    assert set(noise.kept) <= set(strict.kept) and "c" in strict.kept
    assert pruning.decide(2, _seeds(RUNG), EPOCHS, 3, "val_loss", "noise").kept == noise.kept


def _key(**settings):
    return json.dumps({"name": "x", "epochs": 9, **settings}, sort_keys=True)  # as config_key does


def test_at_the_first_rung_each_value_of_each_setting_keeps_its_best():
    """Dropout 0.5 starts slowly: after one epoch every dropout-0.5 configuration is clearly
    behind, so without the choices rule dropout 0.5 would leave the race on one epoch."""
    table = {_key(lr=0.003, dropout=0.0): [0.951, 0.949, 0.950],
             _key(lr=0.001, dropout=0.0): [0.946, 0.944, 0.945],
             _key(lr=0.0003, dropout=0.0): [0.921, 0.919, 0.920],
             _key(lr=0.003, dropout=0.5): [0.900, 0.902, 0.898],  # the best with dropout 0.5
             _key(lr=0.001, dropout=0.5): [0.880, 0.882, 0.878],
             _key(lr=0.0003, dropout=0.5): [0.850, 0.852, 0.848]}
    keys = list(table)
    at1 = {k: [(_h(v), "running") for v in vals] for k, vals in table.items()}  # epoch 1
    d = pruning.decide(1, at1, dict.fromkeys(table, 9), 6, "val_acc", "noise", first=True)
    # the best 1 of 6; nothing within noise (seed sd 0.001); then the best with lr=0.001,
    # lr=0.0003 (the lowest learning rate) and dropout=0.5
    assert d.best == 1 and d.within_noise == []
    assert d.kept == [keys[0], keys[1], keys[2], keys[3]] and d.pruned == keys[4:]
    assert d.choices == {keys[1]: "lr=0.001", keys[2]: "lr=0.0003", keys[3]: "dropout=0.5"}
    assert d.why().startswith("kept 4 of 6 at epoch 1: the best 1, 0 within noise of the 1st (")
    assert d.why().endswith(", and 3 as the best with lr=0.001 / lr=0.0003 / dropout=0.5")
    # only at the first rung, only with rule "noise"
    later = pruning.decide(1, at1, dict.fromkeys(table, 9), 6, "val_acc", "noise")
    assert later.kept == [keys[0]] and later.choices == {}
    assert pruning.decide(1, at1, dict.fromkeys(table, 9), 6, "val_acc", "top", first=True).kept == [keys[0]]


def test_choice_groups_bin_many_numeric_values_and_skip_names_and_synonyms():
    keys = [_key(name=f"#{i}", lr=lr, batch_norm=bn, norm="batch" if bn else "none")
            for i, (lr, bn) in enumerate([(1e-4, True), (2e-4, False), (5e-4, True), (1e-3, False),
                                          (2e-3, True), (5e-3, False)])]
    groups = pruning.choice_groups(keys)
    # six learning rates: thirds by rank; batch_norm and its synonym norm split alike: once
    assert sorted(groups) == ["batch_norm=false", "batch_norm=true", "lr 0.0001-0.0002",
                              "lr 0.0005-0.001", "lr 0.002-0.005"]
    assert groups["lr 0.0001-0.0002"] == {keys[0], keys[1]}
    assert pruning.choice_groups(["a", "b"]) == {}  # keys without settings: nothing to group
    # a value only one configuration has is no shared choice (a grid over lr alone prunes as before)
    assert pruning.choice_groups([_key(lr=0.001), _key(lr=0.01)]) == {}


def test_noise_rule_edge_cases():
    one_seed = {k: [(_h(0.5, v[0]), "running")] for k, v in RUNG.items()}  # no spread to pool
    d = pruning.decide(2, one_seed, EPOCHS, 3, "val_acc", "noise")
    assert d.kept == ["a", "b"] and d.sd is None
    assert d.why() == "kept 2 of 6 at epoch 2: the best 2 (one seed per configuration: no noise estimate)"
    # a diverged seed puts its configuration last and never counts as noise
    seeds = _seeds(RUNG)
    seeds["b"] = seeds["b"][:2] + [(_h(0.5), "diverged")]
    d = pruning.decide(2, seeds, EPOCHS, 3, "val_acc", "noise")
    assert d.pruned[-1] == "b" and "b" not in d.kept
    # identical seeds everywhere: sd 0, only exact ties go on
    flat = {k: [(_h(0.5, v[0]), "running")] * 3 for k, v in RUNG.items()}
    d = pruning.decide(2, flat, EPOCHS, 3, "val_acc", "noise")
    assert d.sd == pytest.approx(0, abs=1e-12) and d.kept == ["a", "b"]
    assert pruning.t_critical(0.05, 2) == pytest.approx(2.919986, abs=1e-5)  # the t table
    assert pruning.t_critical(0.01, 10) == pytest.approx(2.763769, abs=1e-5)


def test_search_table_rule_alpha_and_strict_types():
    spec = parse_search({"method": "halving"}, "s")
    # the defaults the replay chose; rule "top" is the rule (and eta) from before
    assert (spec.rule, spec.eta, spec.alpha, spec.min_epochs) == ("noise", 6, 0.05, 1)
    top = parse_search({"method": "halving", "rule": "top"}, "s")
    assert (top.rule, top.eta) == ("top", 3)
    assert parse_search({"method": "halving", "eta": 4, "alpha": 0.01}, "s").eta == 4
    for bad, what in (({"method": "random", "samples": 3, "halving": "no"}, "halving"),
                      ({"method": "halving", "rule": "best"}, "rule"),
                      ({"method": "halving", "alpha": 0.5}, "alpha"),
                      ({"method": "halving", "alpha": 0}, "alpha"),
                      ({"method": "halving", "eta": 3.0}, "eta"),
                      ({"method": "halving", "min_epochs": True}, "min_epochs")):
        with pytest.raises(UserError) as e:
            parse_search(bad, "suite s: search")
        assert what in str(e.value) and "\n" not in str(e.value), bad


def test_min_epochs_above_every_runs_epochs_says_nothing_is_pruned():
    from mlplab.config import RunConfig
    from mlplab.halving import no_rung_warning

    cells = [RunConfig(epochs=5), RunConfig(epochs=9, lr=0.01)]
    spec = parse_search({"method": "halving", "min_epochs": 9}, "s")
    assert no_rung_warning(cells, spec) == (
        "search: min_epochs = 9 is not below any run's epochs (the longest has 9): no rung, "
        "nothing is pruned; set min_epochs below 9")
    assert no_rung_warning(cells, parse_search({"method": "halving", "min_epochs": 8}, "s")) is None


def _synthetic_grid(path: Path, seeds: int = 6, epochs: int = 9) -> list[str]:
    """Four configurations: a fast starter that plateaus, a slow starter that wins, two worse."""
    rng = np.random.default_rng(0)
    shapes = {"fast": (0.950, 0.6), "slow": (0.965, 2.5), "mid": (0.940, 1.5), "bad": (0.90, 1.0)}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["config", "seed", "epoch", "val_acc"])
        for name, (top, tau) in shapes.items():
            for s in range(seeds):
                offset = rng.normal(0, 0.001)
                for e in range(1, epochs + 1):
                    w.writerow([name, s, e, top - (top - 0.7) * np.exp(-e / tau) + offset])
    return list(shapes)


def test_replay_on_a_synthetic_grid(tmp_path):
    from replay_policies import first_epochs, halving, hyperband
    from search_replay import load_grid, replay, score

    _synthetic_grid(tmp_path / "g.csv")
    names, V = load_grid(tmp_path / "g.csv")
    assert names == ["fast", "slow", "mid", "bad"] and V.shape == (4, 6, 9)
    # scoring by hand: winner 'slow' (index 1); keeping only 'fast' costs regret and its p-value
    sub = V[:, :3]
    r = score(sub, np.array([9, 1, 1, 1]), [0])
    assert r["kept"] is False and r["fraction"] == pytest.approx(12 / 36)
    assert r["regret"] == pytest.approx(sub[1, :, -1].mean() - sub[0, :, -1].mean())
    assert r["within_noise"] is False  # 0.008 apart with seed sd 0.001
    assert r["slow"] is True
    res = replay(V, {
        "top r1": halving(spec(method="halving", rule="top", eta=2, min_epochs=1)),
        "top r6": halving(spec(method="halving", rule="top", eta=2, min_epochs=6)),
        "all": first_epochs(1, 4),
        "hyperband": hyperband(2),
    }, n=20, seeds=3, configs=4)
    # pruning at epoch 1 drops the slow starter every time; a first rung at 6 keeps it
    assert res["top r1"]["keep_rate"] == 0 and res["top r1"]["within_noise"] == 0
    assert res["top r6"]["keep_rate"] == 1 and res["top r6"]["mean_regret"] == 0
    assert res["all"] == {"instances": 20, "fraction": 1.0, "keep_rate": 1.0, "mean_regret": 0.0,
                          "max_regret": 0.0, "within_noise": 1.0, "slow_starter_instances": 20,
                          "slow_starter_keep_rate": 1.0}  # 'slow' is last after epoch 1 everywhere
    assert res["top r1"]["slow_starter_keep_rate"] == 0
    assert 0 < res["hyperband"]["fraction"] < 1
    # the same instances and decisions on a second call: a pure function of the curves
    assert replay(V, {"hb": hyperband(2)}, n=20, seeds=3, configs=4)["hb"] == res["hyperband"]


def test_the_search_picture_marks_configurations_kept_within_noise():
    from mlplab.report import search_figure

    h = lambda *a: [{"val_acc": x, "val_loss": 1 - x} for x in a]  # noqa: E731
    by_exp = {"a": [h(.90, .95, .97)] * 2, "b": [h(.88, .94, .96)] * 2, "c": [h(.70)] * 2}
    table = {"a": None, "b": None, "c": 1}  # where each configuration was pruned
    log = {"metric": "val_acc", "eta": 6, "rungs": [
        {"epoch": 1, "kept": ["a", "b"], "pruned": ["c"], "best": 1, "within_noise": ["b"],
         "choices": {"a": "lr=0.001"}}]}
    fig = search_figure(table, by_exp, log)
    marks = [line for line in fig.axes[0].lines if line.get_label().startswith("kept within seed noise")]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [1]
    assert list(marks[0].get_ydata()) == pytest.approx([0.88])
    squares = [line for line in fig.axes[0].lines if line.get_label().startswith("kept as the best")]
    assert len(squares) == 1 and list(squares[0].get_ydata()) == pytest.approx([0.90])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(fig.legends) == 1 and "kept within seed noise (o)" in labels
    # the former rule logs neither: no marks, the picture as before
    log["rungs"][0].pop("within_noise")
    log["rungs"][0].pop("choices")
    assert not [line for line in search_figure(table, by_exp, log).axes[0].lines
                if line.get_label().startswith("kept within")]


def test_the_rule_never_enters_a_run_id():
    from mlplab.suite import parse_suite

    base = {"name": "s", "seeds": 2, "experiment": [{"name": "m", "architecture": "64",
                                                     "grid": {"lr": [0.001, 0.01]}}]}
    ids = [[c.run_id for c in parse_suite({**base, **extra}, "s").cells()] for extra in (
        {}, {"search": {"method": "halving"}}, {"search": {"method": "halving", "rule": "top"}},
        {"search": {"method": "halving", "rule": "noise", "eta": 4, "alpha": 0.01}})]
    assert ids[0] == ids[1] == ids[2] == ids[3] and len(set(ids[0])) == 4


def test_a_run_whose_min_epochs_leaves_no_rung_says_so_in_one_line(tmp_path, synthetic_dir, cli_here):
    from synthetic import on_synthetic

    suite = tmp_path / "s.toml"
    suite.write_text(on_synthetic(
        'name = "s"\nseeds = 2\n[defaults]\ntrain_size = 300\nval_size = 200\nepochs = 2\n'
        '[search]\nmethod = "halving"\nmin_epochs = 2\n[[experiment]]\nname = "m"\n'
        'architecture = "16"\ngrid = { lr = [0.001, 0.01] }\n', synthetic_dir))
    r = cli_here("run", suite, "--out", tmp_path / "o", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if "min_epochs" in x]
    assert len(lines) == 1 and "no rung, nothing is pruned" in lines[0], r.stderr
