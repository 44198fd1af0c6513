"""Interrupts that save: Ctrl-C, SIGTERM or a kernel interrupt writes the last finished epoch of
the group in training (whatever checkpoint_every says), says so in at most two lines, and the
same command or call resumes from it, bit-identical to a run that was never interrupted."""

import csv
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

import pytest
import torch
from safetensors.torch import load_file

import mlplab
from mlplab.checkpoint import read_meta
from mlplab.interrupt import Interrupted, LastEpoch, describe

SUITE = {"name": "i", "seeds": 2, "defaults": {"train_size": 1000, "epochs": 3, "batch_size": 100},
         "experiment": [{"name": "a", "architecture": "784-32-10"}]}


class StopAfter:
    """A progress callback that raises KeyboardInterrupt once epoch `n` has ended."""

    def __init__(self, n: int):
        self.n, self.events = n, []

    def __call__(self, e: dict) -> None:
        self.events.append(e)
        if e["event"] == "epoch" and e["epoch"] == self.n:
            raise KeyboardInterrupt


def _runs(out):
    """run id -> (history without timings, weights) of every stored run."""
    found = {}
    for run in sorted((out / "runs").iterdir()):
        with open(run / "history.csv") as f:
            hist = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]
        found[run.name] = (hist, load_file(str(run / "weights.safetensors")))
    return found


def test_an_interrupt_after_epoch_1_saves_it_and_the_same_call_resumes_bit_identical(tmp_path, mnist,
                                                                                     monkeypatch):
    out = tmp_path / "a"
    stop = StopAfter(1)
    with pytest.raises(Interrupted) as info:
        mlplab.run(SUITE, out, progress=stop)  # checkpoint_every=60: nothing periodic was due
    lines = info.value._render_traceback_()  # what IPython shows instead of a traceback
    assert len(lines) == 2
    assert lines[0] == f"interrupted: saved a at epoch 1/3 in {out / 'checkpoints'}"
    assert lines[1] == "every finished run is saved; the same mlplab.run(...) call resumes"
    assert stop.events[-1] == {"event": "interrupted", "message": str(info.value)}  # the view's end
    frames = traceback.extract_tb(info.value.__traceback__)
    assert len(frames) <= 2 and not any("torch" in f.filename for f in frames)
    (ckpt,) = (out / "checkpoints").glob("*.safetensors")
    assert read_meta(ckpt)["epoch"] == 1
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())

    from jupyter_block import notebook_block  # here: an IPython subprocess imports this module

    assert "interrupted" in notebook_block(stop.events, monkeypatch)  # the block ends in that state

    events: list = []
    mlplab.run(SUITE, out, progress=events.append)
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert "resumed from the checkpoint after epoch 1" in logs
    assert "1 resumed from checkpoints" in notebook_block(events, monkeypatch)  # in its title: it stays
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [2, 3]
    mlplab.run(SUITE, tmp_path / "whole", progress=False)
    a, b = _runs(out), _runs(tmp_path / "whole")
    assert sorted(a) == sorted(b) and len(a) == 2
    for run_id, (hist, weights) in b.items():
        assert a[run_id][0] == hist, run_id  # every epoch's numbers, to the last digit
        for name, t in weights.items():
            assert torch.equal(a[run_id][1][name], t), (run_id, name)


def test_an_interrupt_in_a_temporary_folder_says_nothing_is_kept(mnist):
    with pytest.raises(Interrupted) as info:
        mlplab.run(SUITE, progress=StopAfter(1))
    (line,) = info.value.lines()
    assert line.startswith("interrupted: nothing is kept (out=None") and "out=FOLDER" in line


def test_ipython_shows_two_lines_not_a_traceback(tmp_path, mnist):
    """A notebook cell (IPython's own shell, as a kernel runs it) interrupted mid-run."""
    cell = (f"import mlplab\nfrom tests.test_interrupt import SUITE, StopAfter\n"
            f"mlplab.run(SUITE, {str(tmp_path / 'nb')!r}, progress=StopAfter(1))\n")
    code = ("from IPython.core.interactiveshell import InteractiveShell\n"
            f"r = InteractiveShell.instance().run_cell({cell!r})\n"
            "print('raised', type(r.error_in_exec).__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    shown = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert shown == [f"interrupted: saved a at epoch 1/3 in {tmp_path / 'nb' / 'checkpoints'}",
                     "every finished run is saved; the same mlplab.run(...) call resumes",
                     "raised Interrupted"], done.stdout + done.stderr


class Lines:
    """stderr of a process, line by line, read in a thread; `wait_for` polls with a deadline."""

    def __init__(self, proc):
        self.proc, self.lines = proc, []
        self.reader = threading.Thread(target=lambda: self.lines.extend(proc.stderr), daemon=True)
        self.reader.start()

    def wait_for(self, text: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = [line for line in list(self.lines) if text in line]
            if hit:
                return hit[0]
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in: {''.join(self.lines)[-2000:]}")

    def finish(self) -> list[str]:
        self.proc.wait(timeout=300)
        self.reader.join(timeout=60)
        return [line.rstrip("\n") for line in self.lines if line.strip()]


def _start(cmd):
    return Lines(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True))  # its own group: a terminal's Ctrl-C


@pytest.mark.slow
def test_the_cli_saves_on_sigint_and_sigterm_and_the_rerun_resumes(tmp_path, mnist):
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nseeds = 2\n[defaults]\ntrain_size = 2000\nepochs = 500\n'
                     '[[experiment]]\nname = "b"\narchitecture = "784-32-10"\n')
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "mlplab", "run", str(suite), "--out", str(out), "--device", "cpu"]
    first = _start(cmd)  # checkpoints every 60 s: the interrupt alone writes one here
    first.wait_for("epoch 1/500")
    os.killpg(first.proc.pid, signal.SIGINT)
    lines = first.finish()
    assert first.proc.returncode == 130, lines
    (ckpt,) = (out / "checkpoints").glob("*.safetensors")
    epoch = read_meta(ckpt)["epoch"]
    assert epoch >= 1
    assert lines[-1] == (f"interrupted: saved b at epoch {epoch}/500 in {out / 'checkpoints'}; "
                         "every finished run is saved; run the same command again to resume")
    assert not any("Traceback" in line for line in lines)

    again = _start(cmd)
    again.wait_for(f"resumed from the checkpoint after epoch {epoch}")
    seen = again.wait_for(f"epoch {epoch + 1}/500")  # an epoch of its own, then SIGTERM
    again.proc.send_signal(signal.SIGTERM)
    lines = again.finish()
    assert again.proc.returncode == 143, lines
    later = read_meta(ckpt)["epoch"]
    assert later >= epoch + 1, seen
    assert lines[-1].startswith(f"interrupted: saved b at epoch {later}/500")


def test_what_an_interrupt_reports():
    class Failing:
        path = "o/checkpoints/x.safetensors"

        def save(self, tensors, meta, strict=False):
            return "No space left on device"

    kept = LastEpoch(Failing(), ["m", "m"], 9)
    kept.finished(2, ({"w": torch.ones(2)}, {"epoch": 2}), written=False)
    assert kept.save() == {"names": ["m", "m"], "epoch": 2, "epochs": 9, "path": None,
                           "error": "its checkpoint could not be written (No space left on device)"}
    first = LastEpoch(Failing(), ["n"], 9).save()  # interrupted in its first epoch
    assert describe([first]) == "n: no epoch finished yet, nothing to save"
    assert describe([]) == "no group was training"
    assert LastEpoch(None, ["n"], 9).save()["error"].startswith("checkpoints are off")
