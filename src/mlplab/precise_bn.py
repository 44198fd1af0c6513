"""bn_eval = "precise" (PreciseBN; Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"): after
training, every BatchNorm layer's mean and variance are replaced by the population statistics of
its input over the training split, computed with the final (or restored best) weights, and the
members are evaluated with those.

Layer by layer in eval mode: layer l's statistics are measured on inputs that the layers before
it normalise with their own population statistics, which is exactly the network that is then
evaluated (fvcore's update_bn_stats instead averages batch statistics in training mode). Exact
over the whole split, in float64 sums; the variance is the population's (divided by N).
Deterministic: no sampling, no augmentation, no dropout (eval mode)."""

from __future__ import annotations

import torch

from .data import Splits
from .evaluate import as_input, logits, loss_acc
from .layers.batch_norm import BatchNorm
from .model import StackedMLP


class _Measured(Exception):
    """Raised by the measuring hook: the layers after the measured one need not run."""


@torch.no_grad()
def population_stats_(model: StackedMLP, x_u8: torch.Tensor, chunk: int | None = None) -> None:
    """Replace, in place, each BatchNorm layer's mean/var of every member with the population
    mean/variance of that layer's input over the images x_u8 [N, in] (uint8), in eval mode, the
    layers in forward order (each measured after the ones before it are set)."""
    chunk = chunk or max(256, 8192 // model.k)  # as evaluate.logits: bounded memory for large K
    x_u8 = x_u8.to(model.device)
    was_training = model.training
    model.eval()
    try:
        for bn in (m for m in model.modules() if isinstance(m, BatchNorm)):
            sums = torch.zeros(2, model.k, bn.spec.width, dtype=torch.float64, device=model.device)

            def measure(module, args, sums=sums):
                h = args[0].double()  # [K, B, H]
                sums[0].add_(h.sum(1))
                sums[1].add_(h.square().sum(1))
                raise _Measured

            handle = bn.register_forward_pre_hook(measure)
            try:
                for start in range(0, len(x_u8), chunk):
                    xb = as_input(x_u8[start:start + chunk])
                    try:
                        model(xb.unsqueeze(0).expand(model.k, -1, -1))
                    except _Measured:
                        pass
            finally:
                handle.remove()
            mean = sums[0] / len(x_u8)
            var = (sums[1] / len(x_u8) - mean.square()).clamp_(min=0)
            bn.mean.copy_(mean.view_as(bn.mean))
            bn.var.copy_(var.view_as(bn.var))
    finally:
        model.train(was_training)


def apply(results: list, splits: Splits, device: torch.device) -> dict[int, dict]:
    """For the members of `results` (fused.MemberResult) with bn_eval = "precise" and BatchNorm:
    recompute their statistics over the training split (their kept weights: the best epoch's
    with restore_best), write them into each member's state (so the stored weights, predict and
    export use them), and return, by index into results, the validation numbers with them plus
    the numbers the moving statistics gave (`bn_moving`, for the record)."""
    chosen = [i for i, r in enumerate(results)
              if r.cfg.bn_eval == "precise" and r.cfg.norm == "batch" and r.state
              and r.status != "diverged"]
    if not chosen:
        return {}
    model = StackedMLP([results[i].cfg for i in chosen], device)
    for pos, i in enumerate(chosen):
        model.load_member_state(pos, results[i].state)
    before = _evaluate(model, splits)
    population_stats_(model, splits.x_train)
    after = _evaluate(model, splits)
    out = {}
    for pos, i in enumerate(chosen):
        results[i].state = model.member_state(pos)
        out[i] = {"val_loss": after["val_loss"][pos], "val_acc": after["val_acc"][pos],
                  "bn_eval": "precise", "bn_moving": {k: v[pos] for k, v in before.items()}}
    return out


def _evaluate(model: StackedMLP, splits: Splits) -> dict[str, list[float]]:
    """Validation and test loss and accuracy of every member (lists by model position)."""
    dev = model.device
    out = {}
    for part, x, y in (("val", splits.x_val, splits.y_val), ("test", splits.x_test, splits.y_test)):
        loss, acc = loss_acc(logits(model, x.to(dev)), y.to(dev))
        out[f"{part}_loss"], out[f"{part}_acc"] = loss.tolist(), acc.tolist()
    return out
