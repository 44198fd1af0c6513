"""Strict inputs: every bad value in a suite file, a Python argument or a CLI option is one line
naming it (a UserError from Python, exit 2 from the CLI) before anything is written; values the
store cannot hold, names that are not plain text, and groups that cannot fit in memory never
start a run."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import mlplab
from mlplab import memory
from mlplab.config import RunConfig
from mlplab.errors import UserError
from mlplab.inputs import MAX_SEED, check_checkpoint_every, check_cluster
from mlplab.suite import load_suite, parse_suite

HUGE = "784-100000000-10"  # 10^8 units: about 8e10 parameters

# (TOML value of one experiment key, what the one-line error must say)
BAD_VALUES = [
    ("batch_size = true", "batch_size: Input should be a valid integer"),
    ("epochs = true", "epochs: Input should be a valid integer"),
    ("epochs = 2.0", "epochs: Input should be a valid integer"),
    ("epochs = 2.5", "epochs: Input should be a valid integer"),
    ("patience = false", "patience: Input should be a valid integer"),
    ('batch_size = "128"', "batch_size: Input should be a valid integer"),
    ('lr = "0.01"', "lr: Input should be a valid number"),
    ("lr = true", "lr: Input should be a valid number"),
    ('dropout = "0.5"', "dropout: Input should be a valid number"),
    ("max_norm = true", "max_norm: Input should be a valid number"),
    ("init_stddev = true", "init_stddev must be a positive number"),
    ("init_stddev = [0.1, false]", "init_stddev must be a positive number"),
    ('restore_best = "yes"', "restore_best: Input should be a valid boolean"),
    ("architecture = 784", "architecture: Input should be a valid string"),
    ('architecture = "７８４-10"', "written with the digits 0-9"),
    ('architecture = "784-٥١٢-10"', "written with the digits 0-9"),
    ('architecture = "784-99999999999999999-10"', "a width is over"),
    ("validation = 1", "validation: Input should be 'split' or 'test'"),
    ("seed = -1", "seed: Input should be greater than or equal to 0"),
    (f"seed = {2**63}", "seed: Input should be less than or equal to 9223372036854775807"),
]


def _toml(line: str) -> str:
    return f'name = "t"\n[[experiment]]\nname = "x"\n{line}\n'


@pytest.mark.parametrize("line, message", BAD_VALUES)
def test_bad_types_in_a_suite_file_are_one_line(tmp_path, line, message):
    path = tmp_path / "s.toml"
    path.write_text(_toml(line), encoding="utf-8")
    with pytest.raises(UserError) as e:
        load_suite(str(path))
    assert message in str(e.value) and "experiment 'x'" in str(e.value)
    assert "\n" not in str(e.value)


PY_BAD = [("batch_size", True), ("epochs", True), ("epochs", 2.0), ("lr", "0.01"), ("lr", True),
          ("architecture", "７８４-10"), ("seed", -1), ("seed", 2**63), ("name", 3),
          ("batch_norm", 1), ("dropout", None)]


@pytest.mark.parametrize("key, value", PY_BAD)
def test_bad_values_from_python_are_user_errors(tmp_path, key, value):
    """RunConfig(...), Suite(...) and mlplab.run(...) all raise UserError, never pydantic's
    ValidationError, and mlplab.run writes nothing."""
    with pytest.raises(UserError, match=key) as e:
        RunConfig(**{key: value})
    assert "\n" not in str(e.value)
    if key in ("name", "seed"):
        return  # suites name their experiments and seeds themselves
    with pytest.raises(UserError, match=key):
        mlplab.Suite(name="s", experiments=[{"name": "x", key: value}])
    out = tmp_path / "out"
    with pytest.raises(UserError, match=key):
        mlplab.run({"name": "s", "experiments": [{"name": "x", key: value}]}, out, progress=False)
    assert not out.exists()


def test_accepted_values_keep_their_run_ids():
    """An int where a float is allowed (TOML's lr = 1) stays accepted with the float's run id;
    numpy scalars from a grid built with numpy are their Python values."""
    assert RunConfig(lr=1).run_id == RunConfig(lr=1.0).run_id
    assert RunConfig(lr=1).lr == 1.0 and isinstance(RunConfig(lr=1).lr, float)
    assert RunConfig(init_stddev=[1, 0.5]).run_id == RunConfig(init_stddev=[1.0, 0.5]).run_id
    assert RunConfig(batch_size=np.int64(64), dropout=np.float64(0.5)).run_id == (
        RunConfig(batch_size=64, dropout=0.5).run_id)
    assert RunConfig(batch_norm=np.bool_(True)).run_id == RunConfig(batch_norm=True).run_id
    assert RunConfig(architecture="784 - 100 - 10").widths == (784, 100, 10)
    suite = parse_suite({"experiment": [{"name": "x", "lr": 1, "init_stddev": 1}]}, "t")
    assert suite.runs()[0].run_id == RunConfig(name="x", lr=1.0, init_stddev=1.0).run_id
    assert RunConfig(activation="sigmoid").run_id == "058cd3592fa5"  # a literal from a release


@pytest.mark.parametrize("seeds, message", [
    ([2**63], "seed 9223372036854775808 must be a whole number from 0 to"),
    ([-1], "seed -1 must be a whole number from 0 to"),
    ([0, True], "seed True must be"),
    ([1.0], "seed 1.0 must be"),
    (True, "seeds must be a positive count or a non-empty list"),
    (0, "seeds must be a positive count"),
    (10**12, "seeds = 1,000,000,000,000 is over the limit of 10,000 runs"),
])
def test_seeds_are_0_to_2_63_minus_1(seeds, message):
    with pytest.raises(UserError, match=message):
        parse_suite({"seeds": seeds, "experiment": [{"name": "x"}]}, "t")
    assert parse_suite({"seeds": [0, MAX_SEED], "experiment": [{"name": "x"}]}, "t").seeds == [0, MAX_SEED]
    with pytest.raises(UserError, match="seed -1 must be"):
        mlplab.Suite(name="s", seeds=[-1], experiments=[mlplab.suite.Experiment(name="x", settings={})])


@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": -1}, "seeds must be a positive whole number, got -1"),
    ({"seeds": True}, "seeds must be a positive whole number, got True"),
    ({"seeds": 2.0}, "seeds must be a positive whole number, got 2.0"),
    ({"seeds": 10**30}, "seeds = 1,000,000,000,000,000,000,000,000,000,000 is over the limit"),
    ({"epochs": 0}, "epochs must be a positive whole number, got 0"),
    ({"epochs": "3"}, "epochs must be a positive whole number, got '3'"),
    ({"device": "gpu"}, "device 'gpu' is not one of: auto, cpu, cuda"),
    ({"workers": 0}, "workers must be a positive whole number, got 0"),
    ({"workers": True}, "workers must be a positive whole number, got True"),
    ({"checkpoint_every": float("nan")}, "checkpoint_every nan must be seconds >= 0"),
    ({"checkpoint_every": -1}, "checkpoint_every -1 must be seconds >= 0"),
    ({"checkpoint_every": "60"}, "checkpoint_every '60' must be seconds >= 0"),
    ({"cluster": "http://10.0.0.1:8786"}, "scheme http:// is not one of: tcp://, tls://, ws://, wss://"),
    ({"cluster": "tcp://h:1", "workers": 2}, "give cluster (an existing scheduler) or workers"),
    ({"only": 3}, "only must be a name or a list of names, got 3"),
    ({"progress": "yes"}, "progress must be True, False or a callable"),
    ({"data_dir": "/does/not/exist"}, "data_dir '/does/not/exist': no such folder"),
])
def test_bad_arguments_of_run_name_the_parameter(tmp_path, kwargs, message):
    out = tmp_path / "out"
    with pytest.raises(UserError) as e:
        mlplab.run("quick", out, **kwargs)
    assert message in str(e.value) and "--" not in str(e.value)  # the parameter, not a flag
    assert not out.exists()


def test_bad_arguments_of_load_and_results(tmp_path):
    with pytest.raises(UserError, match="out must be a path"):
        mlplab.load(42)
    with pytest.raises(UserError, match="out must be a path"):
        mlplab.load(None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="out '.*file': exists and is not a folder") as e:
        mlplab.run("quick", tmp_path / "file", progress=False)
    assert "--" not in str(e.value) and (tmp_path / "file").read_text() == "x"


def test_checkpoint_every_inf_is_never_on_a_clock():
    assert check_checkpoint_every(float("inf")) == float("inf")
    assert check_checkpoint_every(0) == 0.0 and check_checkpoint_every(None) is None


def test_cluster_addresses_and_the_unencrypted_warning():
    from mlplab.cluster import plain_tcp_warning

    for ok in ("tcp://10.0.0.1:8786", "tls://h:1", "ws://h:1", "wss://h:1", "h:8786"):
        assert check_cluster(ok) == ok
    for bad in ("http://h:1", "inproc://x", "tcp://", "", "tcp://h :1"):
        with pytest.raises(UserError, match="cluster"):
            check_cluster(bad)
    assert plain_tcp_warning("tcp://127.evil.example:8786")  # a host name, not loopback
    assert plain_tcp_warning("ws://10.0.0.1:8786")  # unencrypted too
    assert plain_tcp_warning("tcp://127.0.0.2:8786") is None
    assert plain_tcp_warning("tcp://[::1]:8786") is None
    assert plain_tcp_warning("wss://10.0.0.1:8786") is None


@pytest.mark.parametrize("experiments, message", [
    ([{"name": "a", "grid": {"dropout": [0.5]}}, {"name": "a[dropout=0.5]"}],
     re.escape("experiments 'a' and 'a[dropout=0.5]' both make a run named 'a[dropout=0.5]'")),
    ([{"name": "a[dropout=0.5]"}, {"name": "a", "grid": {"dropout": [0.5]}}],
     re.escape("experiments 'a[dropout=0.5]' and 'a' both make a run named 'a[dropout=0.5]'")),
    ([{"name": "x\ny"}], r"name 'x\\ny' contains the control character '\\n'"),
    ([{"name": "x\x00"}], r"contains the control character '\\x00'"),
    ([{"name": "\x1b]0;owned\x07"}], r"contains the control character '\\x1b'"),
    ([{"name": "ab\u202ecd"}], "contains the control character"),
    ([{"name": "x" * 201}], "is 201 characters long; at most 200 are allowed"),
])
def test_names_are_plain_unique_text(tmp_path, experiments, message):
    with pytest.raises(UserError, match=message) as e:
        parse_suite({"experiment": experiments}, "t")
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message):
        mlplab.run({"name": "t", "experiments": experiments}, out, progress=False)
    assert not out.exists()
    assert parse_suite({"experiment": [{"name": "x" * 200}]}, "t").runs()[0].name == "x" * 200


def test_the_suite_name_and_description_are_text():
    with pytest.raises(UserError, match="the suite's name must be non-empty text, got 3"):
        parse_suite({"name": 3, "experiment": [{"name": "x"}]}, "t")
    with pytest.raises(UserError, match="description contains the control character"):
        parse_suite({"description": "\x1b[2J", "experiment": [{"name": "x"}]}, "t")
    assert parse_suite({"description": "two\nlines", "experiment": [{"name": "x"}]}, "t")


def test_val_size_above_the_data_stops_before_out(tmp_path, mnist):
    out = tmp_path / "out"
    suite = {"name": "v", "experiments": [{"name": "v", "architecture": "32", "val_size": 60_000}]}
    with pytest.raises(UserError, match="val_size 60,000 must be below the 60,000 training images"):
        mlplab.run(suite, out, device="cpu", progress=False)
    assert not out.exists()


def test_memory_estimate_is_arithmetic_and_refuses_a_huge_group(tmp_path, mnist, monkeypatch):
    cfg = RunConfig(architecture="784-100-10", optimizer="adam")
    params = 784 * 100 + 100 + 100 * 10 + 10
    # 2 members: parameters, gradients and Adam's two slots, then the evaluation's 8192 rows
    assert memory.group_bytes([cfg, cfg], 128) == 2 * params * 4 * 4 + 8192 * 2 * 784 * 4
    assert memory.group_bytes([RunConfig(architecture=HUGE)], 128) > 1e12  # > 1000 GB
    out = tmp_path / "out"
    suite = {"name": "m", "experiments": [{"name": "huge", "architecture": HUGE}]}
    with pytest.raises(UserError, match=r"needs at least [\d,.]+ GB .* and cpu has [\d,.]+ GB"):
        mlplab.run(suite, out, device="cpu", progress=False)
    assert not out.exists()
    monkeypatch.setenv("MLPLAB_MEMORY_GB", "0.001")  # 1 MB: even a small group cannot fit
    small = {"name": "m", "seeds": 3, "experiments": [{"name": "s", "architecture": "784-64-10"}]}
    with pytest.raises(UserError, match=r"784-64-10 x3: s\) needs at least 0\.\d GB .* "
                                        r"has 0\.0 GB MLPLAB_MEMORY_GB"):
        mlplab.run(small, out, device="cpu", progress=False)
    assert not out.exists()
    monkeypatch.setenv("MLPLAB_MEMORY_GB", "lots")
    with pytest.raises(UserError, match="MLPLAB_MEMORY_GB='lots' must be a positive number"):
        mlplab.run(small, out, device="cpu", progress=False)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mlplab", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"}, timeout=300)


@pytest.mark.parametrize("line, args, message", [
    ("batch_size = true", (), "batch_size: Input should be a valid integer"),
    ('lr = "0.01"', (), "lr: Input should be a valid number"),
    (f'architecture = "{HUGE}"', ("--device", "cpu"), "needs at least"),
    ("epochs = 1", ("--checkpoint-every", "nan"), "'--checkpoint-every': nan is not a number"),
    ("epochs = 1", ("--cluster", "http://10.0.0.1:8786"), "scheme http:// is not one of"),
])
def test_cli_bad_inputs_exit_2_with_one_line_and_no_out(tmp_path, mnist, line, args, message, cli_here):
    path = tmp_path / "s.toml"
    path.write_text(_toml(line))
    out = tmp_path / "out"
    proc = cli_here("run", str(path), "--out", str(out), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not out.exists()


def test_available_memory_is_read_from_the_device(monkeypatch):
    import torch

    monkeypatch.delenv("MLPLAB_MEMORY_GB", raising=False)
    free, source = memory.available("cpu")
    assert free is not None and free > 0 and source == "available in RAM"
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (2e9, 8e9))  # a GPU with 2 GB free
    group = [RunConfig(architecture="784-8192-8192-10")] * 8
    with pytest.raises(UserError, match=r"x8: .*needs at least [\d.]+ GB .* cuda has 2\.0 GB free on "
                                        r"the GPU"):
        memory.check_fits([group], {"mnist": 60_000}, "cuda", dataset_bytes=55_000_000)
    memory.check_fits([group[:1]], {"mnist": 60_000}, "cuda")  # one member fits in 2 GB
