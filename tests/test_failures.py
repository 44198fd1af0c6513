"""Failures of the machine, not of mlplab: each is one line on stderr, exit code 2, and leaves
nothing half-written; a rerun resumes. Through the CLI's entry point in this process
(`cli_here`), on the synthetic set: what is checked is the store and the message, not MNIST."""

import shutil
import subprocess

import pytest
from synthetic import on_synthetic

SUITE = ('name = "f"\nseeds = 1\n[defaults]\ntrain_size = 1000\nepochs = 1\n'
         '[[experiment]]\nname = "big"\narchitecture = "784-512-10"\n')


def one_line_error(proc, code=2):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in proc.stderr
    return lines[-1]


@pytest.fixture
def trained(tmp_path, synthetic_dir, cli_here):
    suite = tmp_path / "f.toml"
    suite.write_text(on_synthetic(SUITE, synthetic_dir))
    out = tmp_path / "out"
    assert cli_here("run", str(suite), "--out", str(out)).returncode == 0
    return suite, out


def test_a_corrupt_store_is_one_line_everywhere(trained, cli_here):
    suite, out = trained
    (out / "mlplab.db").write_bytes(b"this is not an SQLite database " * 200)
    for args in (["runs", str(out)], ["report", str(out)], ["run", str(suite), "--out", str(out)]):
        line = one_line_error(cli_here(*args))
        assert "not a readable mlplab store" in line and "move mlplab.db aside" in line, args
    # the advice works: the runs folder rebuilds the store
    (out / "mlplab.db").rename(out / "mlplab.db.bad")
    again = cli_here("run", str(suite), "--out", str(out))
    assert again.returncode == 0, again.stderr  # rebuilt from runs/: nothing is trained again
    assert "0 to train" in again.stderr or "nothing to train" in again.stderr, again.stderr


def test_export_into_a_missing_folder(trained, cli_here):
    _, out = trained
    run_id = next((out / "runs").iterdir()).name
    line = one_line_error(cli_here("export", run_id, "--out", str(out), "--format", "torchscript",
                                 "--to", str(out / "nope" / "m.pt")))
    assert "does not exist" in line


def test_disk_full_leaves_nothing_half_written_and_resumes(tmp_path, synthetic_dir, cli_here):
    small = tmp_path / "small"
    small.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        suite = tmp_path / "f.toml"
        suite.write_text(on_synthetic(SUITE, synthetic_dir))
        out = small / "out"
        line = one_line_error(cli_here("run", str(suite), "--out", str(out)))
        assert "disk full" in line and "resume" in line
        assert not [p for p in out.rglob("*") if ".tmp" in p.name]
        assert not any((out / "runs").iterdir())
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        again = cli_here("run", str(suite), "--out", str(out))
        assert again.returncode == 0, again.stderr
        assert len(list((out / "runs").iterdir())) == 1
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_read_only_out(tmp_path, synthetic_dir, cli_here):
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        suite = tmp_path / "f.toml"
        suite.write_text(on_synthetic(SUITE, synthetic_dir))
        line = one_line_error(cli_here("run", str(suite), "--out", str(ro / "out")))
        assert "cannot write there" in line and "Read-only" in line
        line = one_line_error(cli_here("run", str(suite), "--out", str(suite / "below-a-file")))
        assert "cannot write there" in line
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)
