"""bench/gpu.sh, the one prepared GPU run: without a GPU it stops at once with one line and exit 3
(the dry run that checks every step's command line takes a minute: `bash bench/gpu.sh --dry-run DIR`)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script would run")
def test_gpu_script_fails_fast_without_a_gpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), str(tmp_path / "o")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [
        "bench/gpu.sh: no CUDA GPU here (torch.cuda.is_available() is False); use --dry-run on CPU"]
    assert not (tmp_path / "o" / "summary.json").exists()


def test_gpu_script_needs_an_out_folder():
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "usage: bench/gpu.sh" in r.stderr
