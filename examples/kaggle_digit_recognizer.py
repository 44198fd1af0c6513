"""Kaggle's "Digit Recognizer", from the two files Kaggle gives you to the file it wants back:

    python examples/kaggle_digit_recognizer.py DIR          # DIR holds train.csv and test.csv
    python examples/kaggle_digit_recognizer.py --demo DIR   # builds such a DIR from MNIST first

train.csv (label,pixel0..pixel783) has no test split, so mlplab holds out a stratified seventh
as one; test.csv has no labels and is what the submission predicts. Writes DIR/submission.csv
(ImageId from 1, Label). The same from the shell:

    mlplab data inspect DIR
    mlplab run kaggle.toml --out DIR/out            # dataset = "DIR"
    mlplab predict RUN DIR/test.csv --kaggle --to DIR/submission.csv --out DIR/out
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import mlplab


def demo_files(folder: Path, n_train: int = 42_000, n_test: int = 10_000) -> None:
    """train.csv / test.csv in Kaggle's format, made from MNIST (its test labels left out)."""
    x, y, x_test, _, _ = mlplab.datasets.load("mnist")
    folder.mkdir(parents=True, exist_ok=True)
    pixels = ",".join(f"pixel{i}" for i in range(784))
    np.savetxt(folder / "train.csv", np.concatenate([y[:n_train, None], x[:n_train].reshape(n_train, -1)], 1),
               fmt="%d", delimiter=",", header="label," + pixels, comments="")
    np.savetxt(folder / "test.csv", x_test[:n_test].reshape(n_test, -1), fmt="%d", delimiter=",",
               header=pixels, comments="")


def main() -> None:
    ap = argparse.ArgumentParser(description="Kaggle Digit Recognizer: train.csv/test.csv -> submission.csv")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--demo", action="store_true", help="first build train.csv/test.csv from MNIST")
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    if args.demo:
        demo_files(args.folder)
    print(mlplab.datasets.inspect(str(args.folder)))  # layout, counts, classes, the held-out split
    suite = {"name": "kaggle", "seeds": 1,
             "defaults": {"dataset": str(args.folder), "epochs": args.epochs, "val_size": 4200,
                          "patience": 5, "restore_best": True},
             "experiment": [{"name": "784-512-256-10 bn", "architecture": "784-512-256-10",
                             "batch_norm": True, "dropout": 0.2}]}
    results = mlplab.run(suite, out=args.folder / "out")
    best = results.best()
    print(results.table())
    labels = best.predict(args.folder / "test.csv")  # the same pixels as training, no MNIST framing
    lines = ["ImageId,Label"] + [f"{i},{c}" for i, c in enumerate(labels, 1)]
    (args.folder / "submission.csv").write_text("\n".join(lines) + "\n")
    print(f"{args.folder / 'submission.csv'}: {len(labels):,} predictions by {best.config.name} "
          f"(held-out test accuracy {best.metrics['test_acc']:.4f})")


if __name__ == "__main__":
    main()
