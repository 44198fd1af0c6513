"""Evaluation: functions from a model and data to numbers. Nothing here trains or prints."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import StackedMLP


def as_input(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float inputs in [0, 1] (x / 255, as the notebook does)."""
    return x_u8.float().div_(255)


@torch.no_grad()
def logits(model: StackedMLP, x_u8: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Eval-mode logits of every member on the same images: x [N, in] uint8 -> [K, N, classes].
    The shared input is broadcast to the K members chunk by chunk; the chunk shrinks with K so
    the broadcast batch stays near 8192 rows (bounded memory for K = 64 on a GPU)."""
    chunk = chunk or max(256, 8192 // model.k)
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(x_u8), chunk):
        xb = as_input(x_u8[start:start + chunk])
        out.append(model(xb.unsqueeze(0).expand(model.k, -1, -1)))
    model.train(was_training)
    return torch.cat(out, dim=1)


def loss_acc(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and accuracy per member: z [K, N, C], y [N] -> ([K], [K])."""
    k, n, c = z.shape
    yk = y.unsqueeze(0).expand(k, n)
    loss = F.cross_entropy(z.reshape(-1, c), yk.reshape(-1), reduction="none").view(k, n).mean(1)
    acc = (z.argmax(-1) == yk).float().mean(1)
    return loss, acc


def confusion(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Confusion matrix [true, predicted] of counts."""
    idx = y.long() * n_classes + pred.long()
    return torch.bincount(idx, minlength=n_classes * n_classes).view(n_classes, n_classes)


def test_metrics(z: torch.Tensor, y: torch.Tensor, n_classes: int) -> dict:
    """Final metrics of ONE member: z [N, C] logits, y [N] labels."""
    z, y = z.float().cpu(), y.cpu()
    cm = confusion(z.argmax(-1), y, n_classes)
    per_class = (cm.diag().float() / cm.sum(1).clamp(min=1).float()).tolist()
    return {
        "test_loss": float(F.cross_entropy(z, y)),
        "test_acc": float((z.argmax(-1) == y).float().mean()),
        "per_class_acc": [round(a, 6) for a in per_class],
        "confusion_matrix": cm.tolist(),
    }
