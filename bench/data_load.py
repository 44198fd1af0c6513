"""Load time of a dataset file as users hold it, made from MNIST's first ROWS training images:
a Kaggle-sized pixel CSV (train.csv, label,pixel0..pixel783), a Hugging Face style Parquet file
(PNG bytes + label), or an ImageFolder of PNGs. The first load parses it, the second reads the
parse cache; each load runs in a fresh interpreter with an empty (first) or warm (second) cache.

    python bench/data_load.py [--layout csv|parquet|imagefolder] [--rows 42000] [--rounds 3]
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


def build(layout: str, path: Path, rows: int) -> None:
    import io

    from PIL import Image

    import mlplab.datasets

    x, y, *_ = mlplab.datasets.load("mnist")
    x, y = x[:rows], y[:rows]
    if layout == "csv":
        header = "label," + ",".join(f"pixel{i}" for i in range(784))
        np.savetxt(path, np.concatenate([y[:, None], x.reshape(rows, -1)], 1), fmt="%d",
                   delimiter=",", header=header, comments="")
    elif layout == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        def png(img):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            return {"bytes": buf.getvalue(), "path": None}

        pq.write_table(pa.table({"image": [png(i) for i in x], "label": y}), path)
    else:
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            (path / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path / str(label) / f"{i:05d}.png")


def load_once(csv: Path, home: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", ONE, str(csv)], capture_output=True, text=True,
                          env={**os.environ, "MLPLAB_HOME": str(home)}, check=True)
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layout", choices=("csv", "parquet", "imagefolder"), default="csv")
    ap.add_argument("--rows", type=int, default=42_000)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "mlplab-data-load")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    name = {"csv": "train.csv", "parquet": "train.parquet", "imagefolder": "folder"}[args.layout]
    csv = args.dir / f"{args.rows}-{name}"
    if not csv.exists():
        build(args.layout, csv, args.rows)
    size = sum(p.stat().st_size for p in csv.rglob("*")) if csv.is_dir() else csv.stat().st_size
    print(f"{csv}: {size / 1e6:.1f} MB, {args.rows:,} images")
    print("round  first load (parse) s  second load (cache) s  peak RSS first/second MB")
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as home:
            first = load_once(csv, Path(home))
            second = load_once(csv, Path(home))
        print(f"{r + 1:>5}  {first['load_s']:>20.2f}  {second['load_s']:>21.2f}  "
              f"{first['max_rss_mb']:>10.0f} / {second['max_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
