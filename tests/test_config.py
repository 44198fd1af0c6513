import pytest
from pydantic import ValidationError

from mlplab import config, data, model, optim, suite
from mlplab.config import RunConfig, parse_architecture, validate_run
from mlplab.errors import UserError
from mlplab.suite import apply_overrides, load_suite, parse_suite


def test_architecture_strings():
    assert parse_architecture("784-512-256-10") == (784, 512, 256, 10)
    assert parse_architecture("512-256") == (784, 512, 256, 10)
    assert parse_architecture("784-10") == (784, 10)  # no hidden layer, said explicitly
    for bad in ("784-x-10", "784--0-10", "-5", "", " "):
        with pytest.raises(ValueError):
            parse_architecture(bad)


def test_registries_match_the_names_config_validates():
    assert set(config.ACTIVATION_NAMES) == set(model.ACTIVATIONS)
    assert set(config.INITIALIZER_NAMES) == set(model.INITIALIZERS)
    assert set(config.OPTIMIZER_NAMES) == set(optim.OPTIMIZERS)
    from mlplab import data, layers

    assert set(config.DATASET_NAMES) == set(data.DATASETS)
    assert {"none", *(k for k in layers.LAYERS if k in ("batch", "layer"))} == set(config.NORM_NAMES)


def test_run_id_is_a_hash_of_the_config():
    a = RunConfig(architecture="512-256", seed=1)
    assert a.run_id == RunConfig(architecture="512-256", seed=1).run_id
    assert a.run_id != RunConfig(architecture="512-256", seed=2).run_id
    assert a.run_id != RunConfig(architecture="512-256", seed=1, lr=0.01).run_id
    with pytest.raises(ValidationError, match="frozen"):
        a.lr = 3


def test_run_ids_change_only_where_the_output_layer_changed():
    """Ids stored before `output_init` existed (literals from that version): a config whose output
    layer is still drawn the same way keeps its id; one whose output layer changed gets a new one."""
    assert RunConfig(activation="sigmoid").run_id == "058cd3592fa5"  # glorot_uniform before and now
    assert RunConfig(activation="tanh", init="glorot_uniform", architecture="784-100-10").run_id == (
        "f077fbc8062e")
    assert RunConfig(output_init="he_normal").run_id == "44136fa355b3"  # what relu's default drew
    assert RunConfig().run_id != "44136fa355b3"  # He hidden layers, now a glorot_uniform output
    notebook = dict(init="random_normal", init_stddev=[0.039, 0.55], batch_norm=True)
    assert RunConfig(**notebook, output_init="random_normal").run_id == "e3f033c3933a"
    assert RunConfig(**notebook).run_id != "e3f033c3933a"


def test_output_init_is_validated():
    with pytest.raises(UserError, match="output_init 'keras' is not one of: random_normal"):
        validate_run({"output_init": "keras"}, "experiment 'x'")


def test_default_init_follows_activation():
    assert RunConfig(activation="relu").init_name == "he_normal"
    assert RunConfig(activation="sigmoid").init_name == "glorot_uniform"
    assert RunConfig(activation="relu", init="lecun_uniform").init_name == "lecun_uniform"
    assert RunConfig(architecture="10-20-30", init_stddev=[0.1, 0.2]).stddevs() == [0.1, 0.2, 0.2, 0.2]


def test_suite_expansion_grid_seeds_and_names():
    s = parse_suite({
        "seeds": 2,
        "defaults": {"epochs": 3},
        "grid": {"batch_norm": [False, True]},
        "experiment": [
            {"name": "a", "architecture": "64"},
            {"name": "b", "architecture": "32-16", "grid": {"dropout": [0.0, 0.5]}, "lr": 0.01},
        ],
    }, "t")
    runs = s.runs()
    assert [r.name for r in runs] == [
        "a[batch_norm=false]", "a[batch_norm=true]",
        "b[batch_norm=false,dropout=0.0]", "b[batch_norm=false,dropout=0.5]",
        "b[batch_norm=true,dropout=0.0]", "b[batch_norm=true,dropout=0.5]"]
    assert all(r.epochs == 3 for r in runs)
    assert runs[3].lr == 0.01 and runs[3].dropout == 0.5 and runs[0].lr == 1e-3
    cells = s.cells()
    assert len(cells) == 12 and [c.seed for c in cells[:2]] == [0, 1]
    assert len({c.run_id for c in cells}) == 12


@pytest.mark.parametrize("suite, message", [
    ({"experiment": [{"name": "x", "lr": -1}]}, "lr: Input should be greater than 0"),
    ({"experiment": [{"name": "x", "activaton": "relu"}]}, "unknown key 'activaton'; allowed keys:"),
    ({"experiment": [{"name": "x", "activation": "swish2"}]}, "is not one of: relu, sigmoid"),
    ({"experiment": [{"name": "x", "optimizer": "adagrad"}]}, "is not one of: sgd, momentum"),
    ({"experiment": [{"name": "x", "architecture": "784-a-10"}]}, "architecture"),
    ({"experiment": [{"name": "x", "dataset": "cifar"}]}, "is not one of: mnist, fashion-mnist"),
    ({"experiment": [{"name": "x"}, {"name": "x"}]}, "used twice"),
    ({"experiment": [{"lr": 0.1}]}, "needs a non-empty 'name'"),
    ({"experiment": [{"name": "x"}], "grid": {"dropout": []}}, "non-empty list"),
    ({"experiment": [{"name": "x"}], "grid": {"dropout": [0.2, 1.5]}}, "dropout"),
    ({"experiment": [{"name": "x"}], "seeds": 0}, "seeds must be"),
    ({"experiment": [{"name": "x"}], "sedes": 3}, "unknown key 'sedes'"),
    ({"experiment": [{"name": "x", "batch_size": "big"}]}, "batch_size"),
    ({}, "no experiment to run; add at least one [[experiment]]"),
    ({"name": "only-a-name"}, "no experiment to run"),
    ({"experiment": [{"name": "x", "batch_norm": "yes"}]}, "batch_norm: Input should be a valid boolean"),
    ({"experiment": [{"name": "x", "batch_norm": 1}]}, "batch_norm: Input should be a valid boolean"),
    ({"experiment": [{"name": "x", "lr": float("inf")}]}, "lr: Input should be a finite number"),
    ({"experiment": [{"name": "x", "dropout": float("nan")}]}, "dropout"),
    ({"experiment": [{"name": "x", "architecture": ""}]}, "architecture is empty"),
    ({"experiment": [{"name": "x"}], "grid": {"dropout": [0.5, 0.5]}}, "lists 0.5 more than once"),
    ({"experiment": [{"name": "x", "grid": {"lr": [0.1, 0.01, 0.1]}}]}, "lists 0.1 more than once"),
])
def test_invalid_suites_name_the_field(suite, message):
    with pytest.raises(UserError) as e:
        parse_suite(suite, "bad")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_a_huge_grid_is_refused_before_it_is_expanded(monkeypatch):
    validated = []
    monkeypatch.setattr(suite, "validate_run", lambda *a: validated.append(a))
    grid = {"lr": [10.0 ** -(i / 100) for i in range(1, 1001)],
            "weight_decay": [i / 1e6 for i in range(1000)]}
    with pytest.raises(UserError, match=r"1,000,000 configurations x 1 seeds = 1,000,000 runs, over "
                                        r"the limit of 10,000.*MLPLAB_MAX_RUNS"):
        parse_suite({"experiment": [{"name": "x"}], "grid": grid}, "huge")
    assert validated == []  # counted, not expanded: not one run config was built
    monkeypatch.undo()
    small = parse_suite({"experiment": [{"name": "x"}], "grid": {"lr": [0.1, 0.2]}}, "s")
    with pytest.raises(UserError, match="20,000 runs, over the limit"):
        apply_overrides(small, seeds=10_000)
    monkeypatch.setenv("MLPLAB_MAX_RUNS", "3")
    with pytest.raises(UserError, match="over the limit of 3"):
        apply_overrides(small, seeds=2)


def test_epochs_override_never_silently_loses_to_a_grid():
    s = parse_suite({"experiment": [{"name": "x", "grid": {"epochs": [1, 2]}}]}, "g")
    with pytest.raises(UserError, match="epochs: the grid of 'x' sets epochs itself"):
        apply_overrides(s, epochs=5)


def test_builtin_suites_load_and_are_what_they_say():
    names = suite.builtin_suites()
    assert {"seed", "assignment", "quick"} <= set(names)
    seed = load_suite("seed")
    runs = seed.runs()
    assert len(runs) == 6 and all(r.epochs == 60 and r.validation == "test" for r in runs)
    assert {r.widths for r in runs} == {(784, 512, 256, 10), (784, 1024, 512, 256, 10),
                                         (784, 1024, 512, 256, 128, 64, 10)}
    assert sorted(r.dropout for r in runs) == [0, 0, 0, 0.5, 0.5, 0.5]
    assert all(r.init == "random_normal" and r.stddevs()[:2] == [0.039, 0.55] for r in runs)
    assignment = load_suite("assignment").runs()
    assert len(assignment) == 3 * 4 + 3
    assert {r.activation for r in assignment} == {"relu", "sigmoid"}
    assert {r.optimizer for r in assignment} == {"adam", "sgd"}


def test_overrides_and_unknown_suite(tmp_path):
    s = apply_overrides(load_suite("quick"), epochs=1, seeds=3, only=("256-128",))
    cells = s.cells()
    assert {c.epochs for c in cells} == {1} and {c.seed for c in cells} == {0, 1, 2}
    assert {c.architecture for c in cells} == {"784-256-128-10"}
    with pytest.raises(UserError, match="not an experiment"):
        apply_overrides(s, only=("nope",))
    with pytest.raises(UserError, match="neither a file nor a built-in suite"):
        load_suite("no-such-suite")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(UserError, match="not valid TOML"):
        load_suite(str(bad))


def test_group_settings_name_exactly_what_a_group_shares():
    from dataclasses import fields

    from mlplab.config import SHARED
    from mlplab.group import GroupSettings

    assert tuple(f.name for f in fields(GroupSettings)) == SHARED
    assert GroupSettings.of(RunConfig(architecture="64")).widths == (784, 64, 10)


def test_group_key_separates_shapes_not_hyperparameters():
    a = RunConfig(architecture="64", seed=0, lr=1e-3, dropout=0.0)
    assert a.group_key() == RunConfig(architecture="64", seed=5, lr=0.1, dropout=0.5,
                                      epochs=3, init="glorot_uniform").group_key()
    assert a.group_key() != RunConfig(architecture="65").group_key()
    assert a.group_key() != RunConfig(architecture="64", batch_norm=True).group_key()
    assert a.group_key() != RunConfig(architecture="64", optimizer="sgd").group_key()
    assert data.check_dataset_name("mnist") == "mnist"


# A rung of a ladder changes one idea; some ideas take several keys.
IDEAS = [{"lr_schedule", "warmup_epochs"}, {"optimizer", "weight_decay"},
         {"aug_shift", "aug_rotate", "aug_scale", "aug_shear"},
         {"aug_elastic_alpha", "aug_elastic_sigma"}]


@pytest.mark.parametrize("name, rungs", [("best", 9), ("best-fashion", 8)])
def test_best_ladders_change_one_idea_per_rung(name, rungs):
    runs = load_suite(name).runs()
    assert len(runs) == rungs and len(load_suite(name).seeds) == 3
    assert all(r.validation == "split" for r in runs)  # never chosen on the test set
    for before, after in zip(runs, runs[1:], strict=False):
        a, b = before.model_dump(), after.model_dump()
        changed = {k for k in a if a[k] != b[k]} - {"name", "init_stddev"}
        assert len(changed) == 1 or any(changed <= idea for idea in IDEAS), (after.name, changed)
    assert runs[-1].augments and not runs[6].augments


def test_example_suites_are_valid():
    """The suites under examples/ (whose results the README quotes) stay loadable."""
    from pathlib import Path

    files = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))
    assert len(files) >= 2
    for f in files:
        s = load_suite(str(f))
        assert s.cells() and all(r.validation == "split" for r in s.runs())
