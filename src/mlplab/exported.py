"""What an export of runs writes, shared by its targets (tracking: TensorBoard, Parquet;
tracking_mlflow: MLflow): the metric names per epoch and at the end, the config as flat params,
and the one-line error for a missing optional extra."""

from __future__ import annotations

import json
from typing import Any

from .errors import UserError

# store name -> exported name. Per epoch (MLflow: step = epoch); the final metrics of a run get
# names of their own, so that a metric's history holds exactly one value per epoch.
EPOCH_METRICS = {"train_loss": "train_loss", "train_acc": "train_acc", "val_loss": "val_loss",
                 "val_acc": "val_acc", "lr": "lr", "seconds": "epoch_seconds"}
FINAL_METRICS = {"test_acc": "test_acc", "test_loss": "test_loss", "val_acc": "final_val_acc",
                 "val_loss": "final_val_loss", "best_epoch": "best_epoch", "epochs_run": "epochs_run",
                 "train_seconds": "train_seconds", "params": "param_count"}


def flat_config(config: dict, prefix: str = "") -> dict[str, Any]:
    """Config fields as flat scalars: nested tables as `a.b`, lists as JSON text, None as
    "None" (MLflow params and TensorBoard hparams take text, numbers and bools only)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = (json.dumps(v) if isinstance(v, list | tuple)
                                   else "None" if v is None else v)
    return out


def missing_extra(what: str, extra: str, module: str) -> UserError:
    return UserError(f"export to {what} needs the {module} package: pip install 'mlplab[{extra}]'")
