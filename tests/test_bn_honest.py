"""Honest small runs: the BatchNorm warning (too few updates of the moving statistics) in the
table, the DataFrame and the report; bn_eval = "precise" (population statistics over the
training split, per member of a fused group); run ids of existing configs unchanged."""


import pytest
import torch

import mlplab
from mlplab import bn_honest, compare, precise_bn
from mlplab.config import RunConfig
from mlplab.model import StackedMLP
from mlplab.train import train_group
from mlplab.work import final_metrics


def test_the_warning_says_how_many_updates_and_the_fix():
    bn = {"norm": "batch", "batch_norm": True, "bn_momentum": 0.99}
    text = bn_honest.warning(bn, {"bn_updates": 48, "bn_steps_per_epoch": 24})
    assert text == ("BatchNorm's moving statistics saw 48 updates at momentum 0.99 (their starting "
                    'values still weigh 62%): use bn_eval = "precise", ≥ 17 epochs, or '
                    "bn_momentum = 0.9")
    assert bn_honest.updates_needed(0.99) == 390 and 0.99 ** 390 <= 0.02 < 0.99 ** 389
    assert bn_honest.warning(bn, {"bn_updates": 390, "bn_steps_per_epoch": 24}) is None
    assert bn_honest.warning(bn, {"bn_updates": 389, "bn_steps_per_epoch": 24}) is not None
    assert bn_honest.warning({**bn, "bn_momentum": 0.9}, {"bn_updates": 48}) is None
    assert bn_honest.warning({**bn, "bn_eval": "precise"}, {"bn_updates": 48}) is None
    assert bn_honest.warning({"norm": "layer"}, {"bn_updates": 48}) is None
    assert bn_honest.warning(bn, {}) is None  # stored before runs recorded their updates
    # no momentum of the list suffices for 3 updates: the fix does not offer one
    assert "bn_momentum" not in bn_honest.warning(bn, {"bn_updates": 3, "bn_steps_per_epoch": 3})


def test_bn_eval_is_not_in_existing_run_ids():
    assert RunConfig(bn_eval="keras").run_id == RunConfig().run_id
    assert RunConfig(batch_norm=True, bn_eval="keras").run_id == RunConfig(batch_norm=True).run_id
    assert RunConfig(batch_norm=True, bn_eval="precise").run_id != RunConfig(batch_norm=True).run_id
    assert RunConfig(bn_eval="precise").group_key() == RunConfig().group_key()  # evaluation only
    with pytest.raises(mlplab.UserError, match="bn_eval"):
        RunConfig(bn_eval="exact")


def _bn_inputs(net: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The input of every BatchNorm1d of an exported member, in eval mode, on x."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
             for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    with torch.no_grad():
        net.eval()(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("extra", [{"norm_position": "after"}, {"norm_position": "before"},
                                   {"architecture": "784-32-32-10", "residual": True}])
def test_precise_statistics_are_the_population_statistics_of_each_member(mnist_slice, extra):
    settings = {"architecture": "784-48-32-10", **extra}
    cfgs = [RunConfig(batch_norm=True, bn_eval="precise", epochs=1, seed=s, **settings)
            for s in (1, 2)]
    results = train_group(cfgs, mnist_slice)  # one fused group of 2, 16 updates each
    moving = [dict(r.state) for r in results]
    found = precise_bn.apply(results, mnist_slice, torch.device("cpu"))
    assert sorted(found) == [0, 1]
    model = StackedMLP(cfgs)
    for k, r in enumerate(results):
        model.load_member_state(k, r.state)
    x = mnist_slice.x_train.double() / 255
    nets = [model.member(k).double() for k in range(2)]
    for k, net in enumerate(nets):  # a direct computation in float64 on the exported member
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        inputs = _bn_inputs(net, x)
        assert len(bns) == len(inputs) == 2
        for bn, h in zip(bns, inputs, strict=True):
            torch.testing.assert_close(bn.running_mean, h.mean(0), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(bn.running_var, h.var(0, unbiased=False), rtol=1e-4, atol=1e-5)
        # not the moving statistics, and everything else is the trained weights unchanged
        assert (results[k].state["mean0"] - moving[k]["mean0"]).abs().max() > 1e-2
        assert all(torch.equal(results[k].state[n], t) for n, t in moving[k].items()
                   if not n.startswith(("mean", "var")))
    # each member its own statistics
    assert not torch.allclose(results[0].state["var1"], results[1].state["var1"])
    # and the validation numbers are those of the precise network
    val = found[1]["val_acc"]
    z = nets[1].float()(mnist_slice.x_val.float() / 255)
    assert val == pytest.approx(float((z.argmax(1) == mnist_slice.y_val).float().mean()))


def test_with_restore_best_the_kept_epoch_counts(mnist_slice):
    """The statistics are recomputed for the weights that are kept (the best epoch's) and the
    updates counted up to that epoch."""
    cfg = RunConfig(architecture="784-32-10", batch_norm=True, bn_eval="precise", epochs=1,
                    patience=3, restore_best=True)
    (r,) = train_group([cfg], mnist_slice)
    kept = dict(r.state)  # the best (here: only) epoch's weights
    r.history.append({**r.history[0], "epoch": 2, "val_loss": r.history[0]["val_loss"] + 1})
    assert r.best_epoch == 1 and r.epochs_run == 2
    (m,), _ = final_metrics([r], mnist_slice, 10, torch.device("cpu"))
    assert m["bn_updates"] == 16 and m["bn_steps_per_epoch"] == 16  # 2,000 images / 128
    assert torch.equal(r.state["w0"], kept["w0"]) and not torch.equal(r.state["var0"], kept["var0"])
    h = (mnist_slice.x_train.double() / 255) @ kept["w0"].double() + kept["b0"].double()
    torch.testing.assert_close(r.state["mean0"].double().flatten(), h.relu().mean(0), rtol=1e-4,
                               atol=1e-5)
    assert m["val_acc"] != r.history[0]["val_acc"] and m["val_acc"] > m["bn_moving"]["val_acc"]


def test_members_without_precise_or_batchnorm_are_left_alone(mnist_slice):
    cfgs = [RunConfig(architecture="784-32-10", batch_norm=True, epochs=1, seed=s) for s in (1, 2)]
    cfgs[1] = cfgs[1].model_copy(update={"bn_eval": "precise"})
    results = train_group(cfgs, mnist_slice)
    kept = dict(results[0].state)
    found = precise_bn.apply(results, mnist_slice, torch.device("cpu"))
    assert sorted(found) == [1] and found[1]["bn_eval"] == "precise"
    assert all(torch.equal(results[0].state[n], t) for n, t in kept.items())
    plain = [RunConfig(architecture="784-32-10", bn_eval="precise", epochs=1)]
    assert precise_bn.apply(train_group(plain, mnist_slice), mnist_slice, torch.device("cpu")) == {}


SUITE = {"name": "bn-honest", "seeds": 1,
         "defaults": {"architecture": "784-32-32-10", "train_size": 1000, "epochs": 1,
                      "batch_size": 100},
         "experiments": [{"name": "few", "batch_norm": True},  # 10 updates at 0.99: 90% left
                         {"name": "precise", "batch_norm": True, "bn_eval": "precise"},
                         {"name": "fast", "batch_norm": True, "bn_momentum": 0.5},  # 0.1%
                         {"name": "long", "batch_norm": True, "batch_size": 2},  # 500: 0.7%
                         {"name": "plain"}]}


@pytest.fixture(scope="module")
def honest(tmp_path_factory, mnist):
    out = tmp_path_factory.mktemp("bn") / "out"
    return mlplab.run(SUITE, out=out, progress=False, device="cpu")


def test_the_flag_is_next_to_the_number_in_table_dataframe_and_report(honest):
    table = honest.table()
    warned = table["bn_warning"].dropna()
    assert list(warned.index) == ["few"]
    assert warned["few"].startswith("BatchNorm's moving statistics saw 10 updates at momentum 0.99")
    assert 'bn_eval = "precise"' in warned["few"] and "bn_momentum = 0.5" in warned["few"]
    rows = {r["experiment"]: r for r in compare.table_rows(honest._comparison())}
    assert rows["few"]["val_acc"].endswith(" ⚠") and rows["few"]["test_acc"].endswith(" ⚠")
    assert not any(rows[n]["val_acc"].endswith("⚠") for n in ("precise", "fast", "long", "plain"))
    md = compare.markdown_table(list(rows.values()))
    assert md.count("⚠ few: BatchNorm's moving statistics saw 10 updates") == 1
    html = honest._repr_html_()
    assert "⚠ few: BatchNorm&#x27;s moving statistics saw 10 updates" in html
    report = (honest.report().parent / "report.md").read_text()
    assert "⚠ few: BatchNorm's moving statistics saw 10 updates" in report


def test_runs_record_their_updates_and_precise_its_moving_numbers(honest):
    metrics = {r.experiment: r.metrics for r in honest._runs}
    assert metrics["few"]["bn_updates"] == 10 and metrics["few"]["bn_steps_per_epoch"] == 10
    assert "bn_updates" not in metrics["plain"]
    assert metrics["long"]["bn_updates"] == 500
    precise = metrics["precise"]
    assert precise["bn_eval"] == "precise"
    assert set(precise["bn_moving"]) == {"val_loss", "val_acc", "test_loss", "test_acc"}
    # same seed, same training: the moving numbers are the keras run's, the precise ones differ
    assert precise["bn_moving"]["test_acc"] == pytest.approx(metrics["few"]["test_acc"])
    assert precise["bn_moving"]["val_acc"] == pytest.approx(metrics["few"]["val_acc"])
    assert precise["test_acc"] != metrics["few"]["test_acc"]
    # 10 updates leave 90% of the starting values: the population statistics do better (by 7 to
    # 19 points over seeds 0-7 of this case, measured; seed 0 here)
    assert precise["val_acc"] > precise["bn_moving"]["val_acc"] + 0.02


def test_the_terminal_table_says_it_under_the_table(honest):
    from click.testing import CliRunner

    from mlplab import cli

    out = honest.report().parent
    res = CliRunner().invoke(cli.cli, ["runs", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli.cli, ["report", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert text.count("⚠ few: BatchNorm's moving statistics saw 10 updates") == 1
    assert "⚠ precise:" not in text
