"""Do two versions of mlplab train to the same numbers? Trains a few small groups (BatchNorm
before/after, per-member dropout, max-norm, label smoothing, input standardisation, Adam and
Nesterov) for 2 epochs on 3,000 MNIST images, with this checkout and with a git ref (a temporary
worktree first on PYTHONPATH), one thread each, and compares every epoch's losses and accuracies
and the final weights bit for bit.

    python bench/same_numbers.py --ref 5e0060e
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, torch
from mlplab import data
from mlplab.config import RunConfig
from mlplab.train import train_group
torch.set_num_threads(1)
s = data.split(data.load("mnist"), "split", 10_000, 3000)
base = dict(architecture="784-64-32-10", epochs=2, label_smoothing=0.1)
groups = [
    [RunConfig(**base, batch_norm=True, seed=0),
     RunConfig(**base, batch_norm=True, dropout=0.3, max_norm=2.0, seed=1)],
    [RunConfig(**base, batch_norm=True, bn_position="before", dropout=0.2, seed=2)],
    [RunConfig(**base, dropout=0.2, seed=5, optimizer="nesterov", lr=0.05, input_norm="standardize")],
]
out = []
for group in groups:
    for r in train_group(group, s):
        out.append({"history": [[h[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc")]
                                for h in r.history],
                    "weights": {k: t.flatten().tolist() for k, t in sorted(r.state.items())}})
print(json.dumps(out))
"""


def run(src: str | None) -> list:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True)
    args = ap.parse_args()
    tree = Path(tempfile.mkdtemp(prefix="mlplab-ref-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.ref], check=True,
                   capture_output=True)
    try:
        before, now = run(str(tree / "src")), run(None)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], capture_output=True)
    same = before == now
    n = sum(len(w) for m in now for w in m["weights"].values())
    print(f"{len(now)} runs, {n:,} weights and every epoch's metrics: "
          f"{'bit-identical' if same else 'DIFFERENT'} to {args.ref}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
