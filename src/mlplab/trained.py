"""One trained run as the Python API hands it out (`Results.best()`, `Results[run_id]`): its
config, metrics and history, and a model that predicts, exports and draws its confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import layout, plots, store
from .config import RunConfig
from .errors import UserError
from .evaluate import logits
from .figures import class_names
from .inputs import check_path
from .predict import export, load_model, prepare
from .records import HISTORY_FIELDS, RunRecord
from .showing import adopt

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


class Run:
    """One trained run: its config, metrics, history, and a model that predicts and exports."""

    def __init__(self, record: RunRecord, out: Path, owner: object = None):
        self._owner = owner  # what keeps a temporary results folder alive (its Results)
        self.record = record
        self.run_id: str = record.run_id
        self.experiment: str = record.experiment  # its configuration's name, as in Results.table()
        self.folder = layout.run(out, self.run_id)
        self.config: RunConfig = record.config
        self.metrics: dict[str, Any] = {**record.columns(), **record.metrics}
        self._model = None

    def __repr__(self) -> str:
        return (f"<mlplab.Run {self.run_id} {self.experiment!r} seed {self.config.seed}: "
                f"test_acc {self.metrics['test_acc']:.4f}, {self.metrics['status']}>")

    @property
    def history(self) -> pd.DataFrame:
        """Per-epoch metrics of this run (as Keras' History.history, one row per epoch)."""
        import pandas as pd

        return pd.DataFrame.from_records(list(self.record.history), columns=list(HISTORY_FIELDS))

    def model(self) -> torch.nn.Sequential:
        """The trained network as a plain torch.nn.Sequential in eval mode, taking float pixels
        [N, 784] in [0, 1] and returning logits."""
        return self._stacked().member(0).eval()

    def predict_proba(self, images, preprocess: bool | None = None) -> np.ndarray:
        """Class probabilities [N, classes] for images: paths of image, .npy, pixel CSV or
        Parquet files (Kaggle's test.csv), PIL images, arrays or tensors of any size ([H, W],
        [H, W, 3|4], [N, H, W], [N, 784]; uint8 pixels or floats in [0, 1]), or a list of them.
        All take one path to the model's input (`mlplab.prediction_inputs`): grayscale, then
        MNIST form (digit light on dark, cropped, 20 px, centred in 28×28). `preprocess`: None
        (default) applies MNIST form unless the images already are 28×28 with a dark border
        (MNIST data, kept as it is); True always; False never."""
        x = prepare(images, self._stacked().widths[0], preprocess)[1]
        z = logits(self._stacked(), torch.from_numpy(x))[0]
        return torch.softmax(z, -1).numpy()

    def predict(self, images, preprocess: bool | None = None) -> np.ndarray:
        """Predicted class index per image (see `predict_proba` for `images` and `preprocess`)."""
        return self.predict_proba(images, preprocess).argmax(1)

    def export(self, path: str | Path | None = None, format: str = "onnx") -> Path:
        """Write a standalone model (float pixels [N, 784] in [0, 1] -> logits): `onnx` or
        `torchscript`; default path: the run folder. Returns the path written."""
        path = check_path(path, "path")
        return export(self.folder, format, Path(path) if path else None, params=("format", "path"))

    def plot_confusion(self) -> Figure:
        """The confusion matrix on the test set."""
        m = self.metrics
        return adopt(plots.confusion_plot(m["confusion_matrix"], self._classes(),
                                          f"{self.config.name}, seed {self.config.seed}"))

    def plot_errors(self) -> Figure:
        """Misclassified test digits (true → predicted), as stored when the run finished."""
        path = self.folder / layout.ERRORS
        if not path.is_file():
            raise UserError(f"{self.folder}: no misclassified digits were stored for this run")
        g = store.read_tensors(path)
        captions = [f"{y} → {p}" for y, p in zip(g["labels"].tolist(), g["preds"].tolist(), strict=True)]
        return adopt(plots.gallery_plot(g["images"].numpy(), captions,
                                        f"misclassified test digits (true → predicted), {self.config.name}"))

    def _stacked(self):
        if self._model is None:
            self._model = load_model(self.folder)[1]
        return self._model

    def _classes(self) -> tuple[str, ...]:
        return class_names(self.record)
