"""Comparing studies and naming runs, on slices of the synthetic set (tests/synthetic.py):
`mlplab.load([a, b])` matches the same configuration across folders and says where each run came
from; the same runs have the same names
however a Results was obtained; an empty or interrupted folder keeps the table's columns; a rerun
with nothing to train says so in one line and loads no data; `dir(mlplab)` lists the API while
`import mlplab` stays light; errors reached from Python name Python's parameters."""


import pytest
from click.testing import CliRunner
from jupyter_block import notebook_block
from procs import heavy_after
from synthetic import on_synthetic

import mlplab
from mlplab.errors import UserError

SMALL = on_synthetic({"name": "s", "seeds": 2,
                      "defaults": {"train_size": 500, "epochs": 1, "batch_size": 100},
                      "experiments": [{"name": "a", "architecture": "784-16-10"}]})
# study b: seeds 1 and 2 of a (seed 1 is the very run study a holds) and a configuration of its own
# whose init_stddev is a list (per layer) where a's is a number
B = {**SMALL, "seeds": [1, 2],
     "experiments": [*SMALL["experiments"],
                     {"name": "b", "architecture": "784-8-10", "init": "random_normal",
                      "init_stddev": [0.05, 0.1]}]}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("studies")
    a, b = tmp / "study-a", tmp / "study-b"
    mlplab.run(SMALL, a, progress=False)
    mlplab.run(B, b, progress=False)
    return a, b


def test_two_folders_compare_as_one_results(two, tmp_path):
    a, b = two
    both = mlplab.load([a, b])
    assert both.out is None and both.folders == [a, b] and "study-a + study-b" in repr(both)
    runs = both.to_pandas()
    # the run in both folders (configuration a, seed 1) counts once, from the first folder
    assert len(runs) == 2 + 4 - 1
    assert sorted(runs[runs.experiment == "a"].seed) == [0, 1, 2]
    assert runs[(runs.experiment == "a") & (runs.seed == 1)].folder.tolist() == ["study-a"]
    assert runs.groupby("folder").size().to_dict() == {"study-a": 2, "study-b": 3}
    table = both.table()  # a: one configuration over both folders, its three seeds in the mean
    assert table.loc["a", ["n", "runs", "folders"]].tolist() == [3, 3, "study-a, study-b"]
    assert table.loc["b", "folders"] == "study-b" and table.loc["a", "val_acc"] == pytest.approx(
        runs[runs.experiment == "a"].val_acc.mean())
    assert len(both.history()) == len(runs)  # one epoch each
    assert both.best().folder.parent.parent in (a, b)
    assert both.plot_curves().axes  # a figure over both
    for call in (both.report, both.search, lambda: both.save(tmp_path / "copy")):
        with pytest.raises(UserError, match="works on one results folder"):
            call()
    with pytest.raises(UserError, match="given twice"):
        mlplab.load([a, str(a)])
    single = mlplab.load(a)
    assert "folders" not in single.table() and set(single.to_pandas().folder) == {"study-a"}


def test_names_are_the_same_however_a_results_was_obtained(tmp_path, monkeypatch):
    out = tmp_path / "o"
    mlplab.run(SMALL, out, progress=False)
    r = mlplab.run(SMALL, out, epochs=2, progress=False)  # a second configuration named "a"
    loaded = mlplab.load(out)
    assert sorted(loaded.table().index) == ["a (epochs=1)", "a (epochs=2)"]
    assert list(r.table().index) == ["a (epochs=2)"]  # was "a": named over its own runs only
    mine, every = r.to_pandas(), loaded.to_pandas()
    names = dict(zip(every.run_id, every.experiment, strict=True))
    assert mine.experiment.tolist() == [names[i] for i in mine.run_id]
    assert set(r.history().experiment) == {"a (epochs=2)"}
    assert list(loaded.filter("a (epochs=1)").table().index) == ["a (epochs=1)"]  # kept by filter
    assert "'a (epochs=2)'" in repr(r.best())

    # nothing to train: one line (no empty bar), and no data is loaded for it
    from mlplab import progress, sweep

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded with nothing to train")

    monkeypatch.setattr(sweep, "check_data", no_data)
    events: list = []
    again = mlplab.run(SMALL, out, epochs=2, progress=events.append)
    assert len(again) == 2
    (suite,) = [e for e in events if e["event"] == "suite"]
    line = f"suite s: nothing to train: 2 runs already in {out}"
    assert progress.describe(suite) == line
    assert notebook_block(events, monkeypatch) == f"<div><b>s</b> · {line.removeprefix('suite s: ')}"


def test_an_interrupted_folder_loads_with_the_tables_columns(tmp_path):
    out = tmp_path / "i"

    def stop(e):
        if e["event"] == "epoch":
            raise KeyboardInterrupt

    with pytest.raises(mlplab.Interrupted):
        mlplab.run(SMALL, out, progress=stop)
    r = mlplab.load(out)
    assert len(r) == 0 and "0 runs" in repr(r) and "<table" in r._repr_html_()
    table = r.table()
    assert table.index.name == "model" and table["val_acc"].tolist() == []
    assert {"rank", "n", "test_acc", "p_vs_best", "vs_best", "bn_warning"} <= set(table.columns)
    assert r.to_pandas()["test_acc"].tolist() == [] and r.history()["val_loss"].tolist() == []
    with pytest.raises(UserError, match="no finished run"):
        r.best()


def test_dir_lists_the_api_and_import_mlplab_stays_light():
    code = ("import mlplab\n"
            "names = set(dir(mlplab))\n"
            "api = {'run', 'load', 'Results', 'Run', 'Suite', 'RunConfig', 'UserError', 'Interrupted',"
            " 'datasets', '__version__'}\n"
            "assert api <= names, api - names\n")
    assert not heavy_after(code) & {"torch", "matplotlib.pyplot"}


def test_runs_sorts_on_a_setting_that_is_a_list_in_some_runs(two):
    from mlplab.cli import cli

    res = CliRunner().invoke(cli, ["runs", str(two[1]), "--sort", "init_stddev", "--format", "csv"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("run_id,experiment") and len(lines) == 1 + 4
    # numbers (a's 0.05) before lists (b's [0.05, 0.1])
    assert [line.split(",")[1] for line in lines[1:]] == ["a", "a", "b", "b"]


def test_errors_reached_from_python_name_pythons_parameters(two, tmp_path):
    from mlplab.predict import reproduce

    run = mlplab.load(two[0]).best()
    with pytest.raises(UserError, match=r"^format 'keras' is not one of: torchscript, onnx"):
        run.export(format="keras")
    with pytest.raises(UserError, match=r"^path .*: is a folder; name the file to write$"):
        run.export(tmp_path)
    with pytest.raises(UserError, match=r"^device 'tpu' is not one of: auto, cpu, cuda$"):
        reproduce(run.folder, two[0], device="tpu")


def test_the_report_is_kept_only_while_it_shows_the_whole_store(two):
    from mlplab import report

    a = two[0]
    report.write_report(a)
    assert report.up_to_date(a)
    first = mlplab.load(a).to_pandas().run_id[0]
    mlplab.Results(a, [first]).report()  # report.html now shows one run: never kept for the store
    assert not report.up_to_date(a)
    report.write_report(a)
    assert report.up_to_date(a)
    (a / "report.md").unlink()  # a report file gone: drawn again
    assert not report.up_to_date(a)


def test_a_setting_added_later_at_its_default_is_the_same_configuration():
    """A run stored before a setting existed (its config JSON lacks the key) and one stored after
    (the key at its default) are one configuration in the table; a changed value is another."""
    from mlplab.search import config_key

    old = {"name": "a", "architecture": "784-64-10", "lr": 0.001, "seed": 0}
    new = {**old, "seed": 1, "bn_eval": "keras", "inputs": 784, "classes": 10}
    assert config_key(old) == config_key(new)
    assert config_key(old) != config_key({**new, "bn_eval": "precise"})
