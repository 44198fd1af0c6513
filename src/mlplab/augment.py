"""Data augmentation on the training device, per sample, inside the epoch: random affine maps
(shift, rotation, zoom, shear) and elastic distortion (Simard et al. 2003), applied as ONE
`grid_sample` over the whole fused batch [K*B, 1, 28, 28]. Only images change; labels never do.

Every parameter is drawn uniformly in [-max, +max] per sample from torch's generator on the
device (graph-safe). With every maximum at 0 the grid is the identity and the images come back
unchanged up to float rounding (< 1e-5).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import Augmentation
from .errors import UserError


def _gaussian_kernel(sigma: float, device) -> torch.Tensor:
    radius = max(1, int(math.ceil(2 * sigma)))
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def augment(x: torch.Tensor, aug: Augmentation, side: int | None = None) -> torch.Tensor:
    """x [..., side*side] float images -> same shape, each sample transformed independently.
    side: the images' side (default: the square root of the last dimension, for square images
    of any size; non-square images are refused, since a flat row does not say its shape)."""
    shape = x.shape
    if side is None:
        side = math.isqrt(shape[-1])
        if side * side != shape[-1]:
            raise UserError(f"augmentation needs square images; these have {shape[-1]} pixels "
                            "(not a square): turn augmentation off for this dataset")
    imgs = x.reshape(-1, 1, side, side)
    n, dev = imgs.shape[0], x.device
    shift, rotate, zoom, shear, alpha, sigma = aug

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, device=dev) * 2 - 1) * limit

    angle, skew = uniform(math.radians(rotate)), uniform(math.radians(shear))
    scale = 1 + uniform(zoom)
    cos, sin, tan = angle.cos(), angle.sin(), skew.tan()
    # theta maps output coordinates to input coordinates (normalized to [-1, 1]):
    # rotation @ shear, divided by the zoom, plus a shift of up to `shift` pixels.
    theta = torch.stack([
        torch.stack([cos, cos * tan - sin, uniform(shift) * 2 / side], -1),
        torch.stack([sin, sin * tan + cos, uniform(shift) * 2 / side], -1),
    ], 1)
    theta[:, :, :2] /= scale.view(-1, 1, 1)
    grid = F.affine_grid(theta, [n, 1, side, side], align_corners=False)
    if alpha > 0:
        # A random displacement field per sample, smoothed by a Gaussian (separable), scaled to
        # `alpha` pixels: the elastic distortion of Simard et al.
        field = torch.rand(n * 2, 1, side, side, device=dev) * 2 - 1
        k = _gaussian_kernel(sigma, dev)
        pad = len(k) // 2
        field = F.conv2d(F.pad(field, (pad, pad, 0, 0)), k.view(1, 1, 1, -1))
        field = F.conv2d(F.pad(field, (0, 0, pad, pad)), k.view(1, 1, -1, 1))
        grid = grid + field.view(n, 2, side, side).permute(0, 2, 3, 1) * (alpha * 2 / side)
    out = F.grid_sample(imgs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(shape)
