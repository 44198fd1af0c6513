"""Load time of a Kaggle-sized pixel CSV (train.csv: 42,000 rows of label,pixel0..pixel783 made
from MNIST's first 42,000 training images): the first load parses it, the second reads the
parse cache. Each load runs in a fresh interpreter with an empty (first) or warm (second) cache.

    python bench/csv_load.py [--rows 42000] [--dir /tmp/mlplab-csv] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ONE = """
import json, resource, sys, time
t = time.perf_counter()
import mlplab.data, mlplab.datasets  # torch's import is not the CSV's cost
t_import = time.perf_counter()
x_train, y_train, x_test, y_test, classes = mlplab.datasets.load(sys.argv[1])
t_load = time.perf_counter()
print(json.dumps({"load_s": t_load - t_import, "import_s": t_import - t,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "train": len(x_train), "test": len(x_test)}))
"""


def kaggle_csv(path: Path, rows: int) -> None:
    import mlplab.datasets

    x, y, *_ = mlplab.datasets.load("mnist")
    x, y = x[:rows].reshape(rows, -1), y[:rows]
    header = "label," + ",".join(f"pixel{i}" for i in range(784))
    np.savetxt(path, np.concatenate([y[:, None], x], 1), fmt="%d", delimiter=",", header=header,
               comments="")


def load_once(csv: Path, home: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", ONE, str(csv)], capture_output=True, text=True,
                          env={**os.environ, "MLPLAB_HOME": str(home)}, check=True)
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=42_000)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "mlplab-csv")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    csv = args.dir / f"train-{args.rows}.csv"
    if not csv.is_file():
        kaggle_csv(csv, args.rows)
    print(f"{csv}: {csv.stat().st_size / 1e6:.1f} MB, {args.rows:,} rows")
    print("round  first load (parse) s  second load (cache) s  peak RSS first/second MB")
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as home:
            first = load_once(csv, Path(home))
            second = load_once(csv, Path(home))
        print(f"{r + 1:>5}  {first['load_s']:>20.2f}  {second['load_s']:>21.2f}  "
              f"{first['max_rss_mb']:>10.0f} / {second['max_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
