"""Exports read back by the tools themselves: MLflow's own client reads every run's params,
per-epoch metric history and tags from a local sqlite store; TensorBoard's event reader every
scalar and hparams session; pandas the Parquet table. Exporting twice adds nothing. A missing
extra is one line naming it. Nothing contacts any host."""

import json
import re
import socket
import sys

import pytest
import synthetic

import mlplab
from mlplab.errors import UserError

# 2 configurations x 1 seed x 2 epochs on 300 images; halving (eta 2) stops one at epoch 1
SUITE = {"name": "tiny-track", "seeds": 1,  # on the synthetic set: what is checked is the export
         "defaults": {"dataset": synthetic.path(), "train_size": 300, "val_size": 200, "epochs": 2,
                      "batch_size": 100},
         "search": {"method": "halving", "eta": 2, "min_epochs": 1},
         "experiments": [{"name": "narrow", "architecture": "784-16-10",
                          "grid": {"lr": [0.001, 0.01]}}]}
EPOCH_KEYS = {"train_loss": "train_loss", "train_acc": "train_acc", "val_loss": "val_loss",
              "val_acc": "val_acc", "lr": "lr", "seconds": "epoch_seconds"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("track") / "out"
    r = mlplab.run(SUITE, out, progress=False, checkpoint_every=None)
    assert sorted(r.to_pandas()["status"]) == ["finished", "pruned"]
    return mlplab.load(out)


@pytest.fixture
def no_network(monkeypatch):
    """Every connection to a host other than the loopback is recorded and refused."""
    tried = []
    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not host.startswith(("127.", "::1", "localhost", "/")):
            tried.append(address)
            raise OSError(f"test: no network ({address})")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tried


def _param_text(v):
    return json.dumps(v) if isinstance(v, list) else str(v)


def test_mlflow_client_reads_back_every_run(results, tmp_path, no_network, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # anything MLflow would put in the working folder lands here
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = results.export_runs("mlflow", tracking_uri=uri, experiment="tiny-track")
    assert (done["exported"], done["skipped"]) == (2, 0)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tiny-track")
    children = {r.data.tags["mlplab.run_id"]: r for r in client.search_runs([exp.experiment_id])
                if "mlplab.run_id" in r.data.tags}
    assert sorted(children) == sorted(r.run_id for r in results)
    hist = results.history()
    for run in results:
        got = children[run.run_id]
        assert got.info.status == "FINISHED"
        assert got.data.tags["mlflow.parentRunId"] == done["parent_run_id"]
        want = {k: _param_text(v) for k, v in run.config.model_dump(mode="json").items()}
        assert got.data.params == want
        tags = got.data.tags
        assert (tags["mlplab.status"], tags["mlplab.seed"]) == (run.metrics["status"], str(run.config.seed))
        assert tags.get("mlplab.pruned_at") == (str(run.metrics["epochs_run"])
                                                 if run.metrics["status"] == "pruned" else None)
        mine = hist[hist["run_id"] == run.run_id]
        for src, key in EPOCH_KEYS.items():
            series = client.get_metric_history(got.info.run_id, key)
            assert [(m.step, m.value) for m in series] == list(zip(mine["epoch"], mine[src], strict=True))
        for key, src in (("test_acc", "test_acc"), ("final_val_acc", "val_acc"), ("test_loss", "test_loss")):
            assert got.data.metrics[key] == pytest.approx(run.metrics[src], abs=0)
    parent = client.get_run(done["parent_run_id"])
    assert parent.data.tags["mlplab.role"] == "suite" and parent.info.status == "FINISHED"

    # again: nothing added; a run an interrupted export left RUNNING is replaced, not doubled
    again = results.export_runs("mlflow", tracking_uri=uri, experiment="tiny-track")
    assert (again["exported"], again["skipped"], again["parent_run_id"]) == (0, 2, done["parent_run_id"])
    first = next(iter(results)).run_id
    client.delete_run(children[first].info.run_id)
    client.create_run(exp.experiment_id, tags={"mlplab.run_id": first})  # stays RUNNING
    third = results.export_runs("mlflow", tracking_uri=uri, experiment="tiny-track")
    assert (third["exported"], third["skipped"]) == (1, 1)
    live = [r.data.tags["mlplab.run_id"] for r in client.search_runs([exp.experiment_id])
            if "mlplab.run_id" in r.data.tags]
    assert sorted(live) == sorted(children)
    assert not no_network and not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("writer", ["tensorboardX", "torch"])
def test_tensorboard_reader_reads_every_scalar(results, tmp_path, writer, monkeypatch, no_network):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    if writer == "torch":  # torch's own writer, where tensorboardX is not installed
        monkeypatch.setitem(sys.modules, "tensorboardX", None)
    done = results.export_runs("tensorboard", tmp_path / "tb")
    assert (done["exported"], done["skipped"]) == (2, 0)
    hist = results.history()
    folders = sorted(p for p in (tmp_path / "tb").glob("*/seed*") if p.is_dir())
    assert len(folders) == 2
    for run in results:
        [folder] = [p for p in folders if p.name.endswith(run.run_id)]
        acc = EventAccumulator(str(folder))
        acc.Reload()
        mine = hist[hist["run_id"] == run.run_id]
        for src, key in EPOCH_KEYS.items():
            got = [(s.step, s.value) for s in acc.Scalars(key)]
            assert [s for s, _ in got] == list(mine["epoch"])
            assert [v for _, v in got] == pytest.approx(list(mine[src]), rel=1e-6)  # float32 on disk
        [test_acc] = acc.Scalars("final/test_acc")
        assert (test_acc.step, test_acc.value) == (run.metrics["epochs_run"],
                                                   pytest.approx(run.metrics["test_acc"], rel=1e-6))
        start = metadata.parse_session_start_info_plugin_data(
            acc.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG])
        hp = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
        cfg = run.config.model_dump(mode="json")
        assert hp["lr"] == cfg["lr"] and hp["architecture"] == cfg["architecture"]
        assert hp["train_size"] == 300 and hp["patience"] == "None"
        assert hp["batch_norm"] is False if writer == "tensorboardX" else hp["batch_norm"] == 0  # torch: 0/1
        assert hp["mlplab.status"] == run.metrics["status"]
        assert set(cfg) <= set(hp)
    again = results.export_runs("tensorboard", tmp_path / "tb")
    assert (again["exported"], again["skipped"]) == (0, 2)
    assert len(list((tmp_path / "tb").rglob("events.out.tfevents.*"))) == 2
    assert not no_network


def test_parquet_is_the_history_with_config_columns(results, tmp_path):
    import pandas as pd

    pytest.importorskip("pyarrow")
    path = tmp_path / "runs.parquet"
    done = results.export_runs("parquet", path)
    table = pd.read_parquet(path)
    hist = results.history()
    assert done["rows"] == len(table) == len(hist) == 3  # 2 epochs + 1 (pruned at epoch 1)
    pd.testing.assert_frame_equal(table[list(hist.columns)], hist, check_dtype=False)
    runs = results.to_pandas().set_index("run_id")
    for _, row in table.iterrows():
        mine = runs.loc[row["run_id"]]
        assert (row["config.lr"], row["status"]) == (mine["lr"], mine["status"])
    assert row["architecture"] == "784-16-10" and row["train_size"] == 300


@pytest.mark.parametrize("to, blocked, extra", [
    ("mlflow", ["mlflow"], "mlplab[mlflow]"),
    ("tensorboard", ["tensorboardX", "torch.utils.tensorboard"], "mlplab[tensorboard]"),
    ("parquet", ["pyarrow"], "mlplab[parquet]"),
])
def test_a_missing_extra_is_one_line_naming_it(results, tmp_path, monkeypatch, to, blocked, extra):
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    dest, uri = (None, f"sqlite:///{tmp_path}/m.db") if to == "mlflow" else (tmp_path / "dest", None)
    with pytest.raises(UserError, match=re.escape(f"pip install '{extra}'")) as e:
        results.export_runs(to, dest, tracking_uri=uri)
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("to, dest, kwargs, message", [
    ("wandb", "d", {}, "to 'wandb': not a target; allowed: mlflow, tensorboard, parquet"),
    ("parquet", None, {}, "export to parquet needs dest (the CLI's DEST): the file to write"),
    ("mlflow", "d", {}, "export to mlflow writes to a tracking server or database, not to dest"),
    ("tensorboard", "d", {"experiment": "x"},
     "tracking_uri and experiment (--tracking-uri, --experiment) apply only to the mlflow target"),
    ("mlflow", None, {"experiment": " "}, "experiment: an MLflow experiment name is 1 to 500"),
])
def test_bad_arguments_write_nothing(results, tmp_path, monkeypatch, to, dest, kwargs, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=re.escape(message)):
        results.export_runs(to, dest and tmp_path / dest, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_cli_export_runs(results, tmp_path, cli_here):
    proc = cli_here("export-runs", results.out, tmp_path / "tb", "--to", "tensorboard")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"tensorboard: 2 runs exported, 0 already there; {tmp_path / 'tb'}"
    assert len(list((tmp_path / "tb").rglob("events.out.tfevents.*"))) == 2
