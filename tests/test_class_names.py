"""Class names and image shapes travel from the data to what a user reads: a folder of
non-square images with named classes trains, and the stored run, the report's confusion matrix
and gallery, and predict use those names; augmentation on non-square images is refused before
OUT exists."""

import json

import numpy as np
import pytest
from PIL import Image

import mlplab
from mlplab import report

NAMES = ("circle", "cross", "zero")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, mnist):
    root = tmp_path_factory.mktemp("named")
    x, y = mnist.x_train.numpy(), mnist.y_train.numpy()
    for split, lo, hi in (("train", 0, 900), ("test", 900, 1200)):
        for i in range(lo, hi):
            if y[i] < 3:  # digits 0, 1, 2 as three named classes, cropped to 20 x 28
                d = root / split / NAMES[y[i]]
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(x[i].reshape(28, 28)[4:24]).save(d / f"{i}.png")
    return root


def suite(folder, **extra):
    exp = {"name": "mlp", "architecture": "560-32-3", "inputs": 560, "classes": 3,
           "dataset": str(folder), "epochs": 4, "val_size": 50, **extra}
    return {"name": "named", "experiment": [exp]}


def test_named_classes_and_shape_reach_the_store_report_and_predict(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MLPLAB_HOME", str(tmp_path / "home"))
    res = mlplab.run(suite(folder), tmp_path / "out", device="cpu", progress=False)
    run = res.best()
    metrics = json.loads((run.folder / "metrics.json").read_text())
    assert metrics["classes"] == list(NAMES) and metrics["image_shape"] == [20, 28]
    assert report.class_names(run.record) == NAMES
    built = report.build(tmp_path / "out")
    assert "gallery" in built["figs"] and "confusion" in built["figs"]
    x = np.asarray(Image.open(next((folder / "test" / "cross").iterdir())))
    assert run.predict_proba(x[None].reshape(1, -1)).shape == (1, 3)


def test_augmentation_on_non_square_images_stops_before_out(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MLPLAB_HOME", str(tmp_path / "home"))
    with pytest.raises(mlplab.UserError, match="augmentation needs square images.*20x28"):
        mlplab.run(suite(folder, aug_shift=2.0), tmp_path / "out", device="cpu", progress=False)
    assert not (tmp_path / "out").exists()
