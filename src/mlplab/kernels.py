"""torch's private kernels, used only behind a check, each with a public-op fallback.

The fused optimizer kernels (`torch._fused_adam_`, `_fused_adamw_`, `_fused_sgd_`) and BatchNorm's
backward (`aten.native_batch_norm_backward`) are not public API: their signatures may change in
any torch release. Each is probed once with a tiny call; if it is missing or its signature moved,
mlplab uses the public formula instead (the same numbers to float rounding, slower). The
environment variable MLPLAB_PUBLIC_OPS=1, or `use_private(False)`, forces the fallbacks (the
tests run both paths).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch

_enabled = os.environ.get("MLPLAB_PUBLIC_OPS", "") != "1"
_probed: dict[str, Callable | None] = {}  # name -> the kernel, or None: found and probed once


def _probe_adam(kernel) -> None:
    p, g, m, v = (torch.zeros(2) for _ in range(4))
    kernel([p], [g], [m], [v], [], [torch.ones(())], lr=0.1, beta1=0.9, beta2=0.999,
           weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)


def _probe_sgd(kernel) -> None:
    p, g, b = (torch.zeros(2) for _ in range(3))
    kernel([p], [g], [b], weight_decay=0.0, momentum=0.9, lr=torch.tensor(0.1), dampening=0.0,
           nesterov=False, maximize=False, is_first_step=False)


def _probe_bn(kernel) -> None:
    x, g = torch.ones(3, 2), torch.ones(3, 2)
    kernel(g, x, torch.ones(2), torch.zeros(2), torch.ones(2), torch.zeros(2), torch.ones(2),
           True, 1e-3, [True, True, True])


PRIVATE: dict[str, tuple[Callable[[], Callable | None], Callable]] = {
    "fused_adam": (lambda: getattr(torch, "_fused_adam_", None), _probe_adam),
    "fused_adamw": (lambda: getattr(torch, "_fused_adamw_", None), _probe_adam),
    "fused_sgd": (lambda: getattr(torch, "_fused_sgd_", None), _probe_sgd),
    "batch_norm_backward": (lambda: getattr(torch.ops.aten, "native_batch_norm_backward", None),
                            _probe_bn),
}


def private(name: str) -> Callable | None:
    """The private kernel `name`, or None: disabled, missing, or failing its probe."""
    if not _enabled:
        return None
    if name not in _probed:  # the optimizers ask on every update: decide once
        find, probe = PRIVATE[name]
        kernel = find()
        try:
            if kernel is not None:
                probe(kernel)
        except Exception:  # a changed signature: the public formula instead
            kernel = None
        _probed[name] = kernel
    return _probed[name]


@contextlib.contextmanager
def use_private(on: bool):
    """Turn the private kernels on or off inside a block (tests force the fallbacks with it)."""
    global _enabled
    before, _enabled = _enabled, on
    try:
        yield
    finally:
        _enabled = before


def batch_norm_backward(g: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor, mean: torch.Tensor,
                        invstd: torch.Tensor, eps: float
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode BatchNorm backward over the rows of x [N, F] with the batch statistics the
    forward saved (mean, invstd [F]): (d input [N, F], d gamma [F], d beta [F])."""
    kernel = private("batch_norm_backward")
    if kernel is not None:
        return kernel(g, x, gamma, None, None, mean, invstd, True, eps, [True, True, True])
    n = x.shape[0]
    x_hat = (x - mean) * invstd
    d_beta = g.sum(0)
    d_gamma = (g * x_hat).sum(0)
    d_x = (gamma * invstd / n) * (n * g - d_beta - x_hat * d_gamma)
    return d_x, d_gamma, d_beta
