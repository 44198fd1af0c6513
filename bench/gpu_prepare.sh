#!/usr/bin/env bash
# Prepare what bench/gpu.sh needs on a lent GPU machine that reaches no network: the Python
# packages its image lacks (pydantic v2 and its parts, for Python 3.12) as wheels, and the MNIST
# and Fashion-MNIST IDX files (gzipped), in .gpu-carry/ (ignored by git; pass it as `carry`).
#
#   bash bench/gpu_prepare.sh          # here, once per session (about 45 MB)
#
# Then, through the device tool: run(command="bash bench/gpu.sh \$OUT", carry=[".gpu-carry"]).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.gpu-carry
mkdir -p "$dest/wheels" "$dest/data/mnist" "$dest/data/fashion-mnist"
py=${PYTHON:-.venv/bin/python}

# Wheels for the GPU image's Python 3.12 (torch, numpy, pandas, click, rich, matplotlib, jinja2,
# safetensors, pillow, pytest and hypothesis are already there; see the device tool's KINDS.md).
pydantic=$("$py" -c "import pydantic; print(pydantic.VERSION)")
core=$("$py" -c "import pydantic_core; print(pydantic_core.__version__)")
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dest/wheels" "pydantic==$pydantic" "pydantic-core==$core" annotated-types typing-inspection

# Datasets as gzipped IDX files, read there with `mlplab data fetch NAME --data-dir`.
"$py" - "$dest/data" <<'EOF'
import gzip, sys
from pathlib import Path
from mlplab import data, sources
dest = Path(sys.argv[1])
for name in ("mnist", "fashion-mnist"):
    files, where = sources.fetch(name, data.DATASETS[name])
    for f, raw in files.items():
        (dest / name / f"{f}.gz").write_bytes(gzip.compress(raw, compresslevel=6, mtime=0))
    print(f"{name}: from {where}")
EOF
du -sh "$dest"
