"""A results folder someone else prepared: links planted at every write site (nothing written
outside OUT, one clear line), names that are data (math text, markup, control characters,
formulas, non-ASCII, long), damaged files (a gallery, a run folder, a failed commit) and a store
on read-only media."""

import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
import synthetic
import torch

from mlplab import cli, plots, report, store
from mlplab.checkpoint import Checkpointer
from mlplab.errors import UserError
from mlplab.progress import describe
from mlplab.suite import parse_suite
from mlplab.sweep import run_suite

NAMES = ["$x$", "é", "è", "<script>alert(1)</script>", "=cmd|' /C calc'!A0", "y" * 200]


def _suite(names=("a",)):
    # the synthetic set: 1,000 images (8 updates) leave chance level behind, as 300 of MNIST's did
    return parse_suite({"seeds": 1, "defaults": {"train_size": 1000, "epochs": 1,
                                                 "dataset": synthetic.path(), "val_size": 1000},
                        "experiment": [{"name": n, "architecture": "784-8-10"} for n in names]},
                       "hostile")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished OUT whose experiments carry hostile names (one fused group: seconds)."""
    out = tmp_path_factory.mktemp("hostile") / "out"
    run_suite(_suite(NAMES), out, device="cpu")
    return out


@pytest.fixture
def out(trained, tmp_path):
    """A private copy of the trained OUT, and a victim file and folder outside it."""
    copy = tmp_path / "out"
    shutil.copytree(trained, copy)
    (tmp_path / "victim").write_bytes(b"precious")
    (tmp_path / "victim_dir").mkdir()
    (tmp_path / "victim_dir" / "keep.png").write_bytes(b"precious")
    return copy


def _untouched(tmp_path):
    assert (tmp_path / "victim").read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path / "victim_dir")) == ["keep.png"]
    assert (tmp_path / "victim_dir" / "keep.png").read_bytes() == b"precious"


def _plant(out, site, tmp_path):
    link = out / site
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    is_dir = "." not in site.split("/")[-1] or site.endswith("_files")
    link.symlink_to(tmp_path / ("victim_dir" if is_dir else "victim"))
    return link


RUN_SITES = [".mlplab.lock", "results.csv", "search.json", "mlplab.db", "mlplab.db-wal", "plots",
             "report_files", "report.html", "runs", "checkpoints", "runs/0123abcd",
             "checkpoints/0123456789abcdef.safetensors"]


@pytest.mark.parametrize("site", RUN_SITES)
def test_a_run_refuses_a_link_planted_at_any_write_site(tmp_path, site):
    (tmp_path / "victim").write_bytes(b"precious")
    (tmp_path / "victim_dir").mkdir()
    (tmp_path / "victim_dir" / "keep.png").write_bytes(b"precious")
    out = tmp_path / "fresh"
    (out / "runs").mkdir(parents=True)
    (out / "checkpoints").mkdir()
    link = _plant(out, site, tmp_path)
    with pytest.raises(UserError, match="is a symbolic link") as e:
        run_suite(_suite(), out, device="cpu")
    assert str(link) in str(e.value) and "\n" not in str(e.value)
    _untouched(tmp_path)
    if not (out / "runs").is_symlink():
        assert not any(p.is_dir() and not p.is_symlink() for p in (out / "runs").iterdir())


@pytest.mark.parametrize("site", ["mlplab.db", "results.csv", ".mlplab.lock"])
def test_a_fifo_where_a_file_goes_is_refused_before_training(tmp_path, site):
    out = tmp_path / "fresh"
    out.mkdir()
    os.mkfifo(out / site)  # opening it for reading would block forever
    with pytest.raises(UserError, match="not a (regular|plain) file"):
        run_suite(_suite(), out, device="cpu")
    assert (out / site).is_fifo() and not (out / "runs").exists()


@pytest.mark.parametrize("site", ["plots", "report_files", "report.html", "report.md",
                                  f"plots/{plots.slug('é')}.png", "plots/overlay.png"])
def test_a_report_refuses_a_link_planted_at_any_write_site(out, tmp_path, site):
    link = _plant(out, site, tmp_path)
    with pytest.raises(UserError, match="is a symbolic link") as e:
        report.write_report(out)
    assert str(link) in str(e.value)
    _untouched(tmp_path)


def test_checkpoints_and_the_default_export_never_write_through_a_link(out, tmp_path):
    _plant(out, "checkpoints", tmp_path)
    ck = Checkpointer.for_group(out / "checkpoints", ["a", "b"], 0)
    why = ck.save({"t": torch.zeros(2)}, {"run_ids": ["a", "b"]})
    assert why and "symbolic link" in why  # training goes on without checkpoints
    with pytest.raises(UserError, match="symbolic link"):
        ck.save({"t": torch.zeros(2)}, {"run_ids": ["a", "b"]}, strict=True)
    from mlplab.predict import export

    folder = next(p for p in (out / "runs").iterdir())
    _plant(out, f"runs/{folder.name}/model.pt", tmp_path)
    with pytest.raises(UserError, match="symbolic link"):
        export(folder, "torchscript")
    _untouched(tmp_path)


def test_the_atomic_writer_never_follows_a_link_or_replaces_a_fifo(tmp_path):
    from mlplab.safefs import write_atomic

    (tmp_path / "victim").write_bytes(b"precious")
    (tmp_path / "victim_dir").mkdir()
    (tmp_path / "victim_dir" / "keep.png").write_bytes(b"precious")
    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "a.png").symlink_to(tmp_path / "victim")
    (out / "figs").symlink_to(tmp_path / "victim_dir")
    os.mkfifo(out / "fifo")
    for path, what in ((out / "plots" / "a.png", "symbolic link"),
                       (out / "figs" / "b.png", "symbolic link"),
                       (out / "fifo", "not a regular file")):
        with pytest.raises(UserError, match=what):
            write_atomic(path, b"x", root=out)
    _untouched(tmp_path)
    assert (out / "fifo").is_fifo() and sorted(os.listdir(out / "plots")) == ["a.png"]
    write_atomic(out / "new" / "c.png", b"ok", root=out)  # folders are made, no temporary left
    assert os.listdir(out / "new") == ["c.png"] and (out / "new" / "c.png").read_bytes() == b"ok"


def mlplab(monkeypatch, capsys, *args):
    """The CLI in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["mlplab", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_export_writes_through_the_users_link_and_to_stdout(out, tmp_path, monkeypatch, capsys):
    run_id = next((out / "runs").iterdir()).name
    target = tmp_path / "models" / "real.pt"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "model.pt"
    link.symlink_to(target)
    code, text, err = mlplab(monkeypatch, capsys, "export", run_id, "--out", out, "--format",
                             "torchscript", "--to", link)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link is kept
    assert torch.jit.load(str(target))(torch.rand(3, 784)).shape == (3, 10)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # like /dev/stdout: never replaced by a regular file
    code, _, err = mlplab(monkeypatch, capsys, "export", run_id, "--out", out, "--format",
                          "torchscript", "--to", fifo)
    assert code == 2 and "not a regular file" in err and "--to -" in err
    assert fifo.is_fifo()
    proc = subprocess.run([sys.executable, "-m", "mlplab", "export", run_id, "--out", str(out),
                           "--format", "torchscript", "--to", "-"], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    model = torch.jit.load(io.BytesIO(proc.stdout))
    assert model(torch.rand(2, 784)).shape == (2, 10) and b"standard output" in proc.stderr


def test_names_are_data_in_files_plots_csv_and_report(out):
    rows = {r.experiment: r for r in store.snapshot(out)}
    assert sorted(rows) == sorted(NAMES)
    paths = report.write_report(out)  # '$x$' would fail in matplotlib's math text
    pngs = sorted(p.name for p in (out / "plots").iterdir())
    assert len(pngs) == len(NAMES) + 1 and all(len(p) <= 70 and p.isascii() for p in pngs)
    assert plots.slug("é") != plots.slug("è")
    md, html = paths["md"].read_text(), paths["html"].read_text()
    assert "<script>alert" not in md and "&lt;script&gt;" in md
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)" in html
    cells = (out / "results.csv").read_text()
    assert "'=cmd|' /C calc'!A0" in cells and "\n=cmd" not in cells and ",=cmd" not in cells
    # numbers stay numbers; text that a spreadsheet would run gets a leading apostrophe
    assert store._csv_text([{"a": -0.5, "b": "-x"}], ("a", "b")).splitlines()[1] == "-0.5,'-x"


def test_control_characters_never_reach_the_terminal(out, monkeypatch, capsys):
    evil = "\x1b]0;pwned\x07\x1b[2Jevil\x9b"
    with sqlite3.connect(out / "mlplab.db") as db:  # someone else's folder: any text in the store
        db.execute("UPDATE runs SET experiment = ?, architecture = ? WHERE experiment = 'é'",
                   (evil, "784-8-10" + evil))
    for args in (["runs", out], ["runs", out, "--format", "csv"], ["report", out]):
        code, text, err = mlplab(monkeypatch, capsys, *args)
        assert code == 0, err
        assert not any(c in text + err for c in "\x1b\x07\x9b"), args
        assert "\\x1b" in text, args  # visible, so names that differ there look different
    assert "\x1b" not in describe({"event": "run", "name": evil, "seed": 0, "status": "finished",
                                   "test_acc": 0.5})
    assert "\x1b" not in str(UserError(f"no configuration named {evil!r}"))


def test_a_corrupt_error_gallery_leaves_only_itself_out(out):
    for run in (out / "runs").iterdir():
        (run / "errors.safetensors").write_bytes(b"\xff" * 64)
    paths = report.write_report(out)
    assert len(paths["notes"]) == 1 and "errors.safetensors is damaged" in paths["notes"][0]
    html = paths["html"].read_text()
    assert "misclassified" not in html and "Note: " in html and "confusion matrix" in html


def test_a_failed_commit_leaves_out_usable(tmp_path, monkeypatch):
    suite, out = _suite(["a", "b"]), tmp_path / "out"
    real, failed = store._insert, []

    def insert_fails_once(db, cfg, history, metrics):
        if not failed:
            failed.append(cfg.run_id)
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        real(db, cfg, history, metrics)

    monkeypatch.setattr(store, "_insert", insert_fails_once)
    with pytest.raises(OverflowError):
        run_suite(suite, out, device="cpu")
    assert not (out / "runs" / failed[0]).exists()  # no folder without its row
    rows = run_suite(suite, out, device="cpu")  # the next run is not blocked
    assert [r["status"] for r in rows] == ["finished", "finished"]
    assert sorted(os.listdir(out / "runs")) == sorted(r["run_id"] for r in rows)


def test_one_damaged_folder_never_blocks_a_rebuild(out, caplog):
    ids = sorted(os.listdir(out / "runs"))
    (out / "mlplab.db").unlink()
    (out / "runs" / ids[0] / "config.json").write_text("{not json")
    db = store.open_store(out)
    assert store.finished_ids(db) == set(ids[1:])
    db.close()
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1 and ids[0] in lines[0]


def _mount_tmpfs(path):
    path.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")


def test_a_store_on_read_only_media_is_read_never_written(out, tmp_path, monkeypatch, capsys):
    before = hashlib.sha256((out / "mlplab.db").read_bytes()).hexdigest()
    assert mlplab(monkeypatch, capsys, "runs", out)[0] == 0
    assert hashlib.sha256((out / "mlplab.db").read_bytes()).hexdigest() == before  # no writes
    media = tmp_path / "media"
    _mount_tmpfs(media)
    try:
        shutil.copytree(out, media / "out")
        subprocess.run(["mount", "-o", "remount,ro", str(media)], check=True)
        ro = media / "out"
        code, text, err = mlplab(monkeypatch, capsys, "runs", ro)
        assert code == 0 and f"{len(NAMES)} runs" in text, err
        code, _, err = mlplab(monkeypatch, capsys, "report", ro)
        line = err.strip().splitlines()[-1]
        assert code == 2 and "Read-only" in line and "--to DIR" in line and "corrupt" not in line
        code, _, err = mlplab(monkeypatch, capsys, "report", ro, "--to", tmp_path / "rep")
        assert code == 0 and (tmp_path / "rep" / "report.html").is_file(), err
        import mlplab as api

        assert len(api.load(ro).table()) == len(NAMES)
    finally:
        subprocess.run(["umount", "-l", str(media)], capture_output=True)


def test_a_locked_or_read_only_store_is_never_called_corrupt(out):
    from mlplab.storedb import _store_error

    path = out / "mlplab.db"
    for e, words in ((sqlite3.OperationalError("database is locked"), "locked"),
                     (sqlite3.OperationalError("attempt to write a readonly database"), "read-only"),
                     (sqlite3.OperationalError("unable to open database file"), "cannot open")):
        text = str(_store_error(e, path))
        assert words in text and "not a readable" not in text and "aside" not in text
    assert "not a readable" in str(_store_error(sqlite3.DatabaseError("file is not a database"),
                                                out / "runs" / "nothing"))
