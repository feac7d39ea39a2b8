"""Reconstruction losses for the autoencoder and the landmark-based maps that weight them.

- ``ssim_map(x, y)``: per-pixel SSIM of ``(B, 3, H, W)`` images in ``[0, 1]`` (Gaussian window), ``(B, 1, H, W)``.
- ``face_loss(pred, target, weight, mask=None)``: ``ssim_weight * DSSIM + l1_weight * L1``, averaged with a
  per-pixel weight ``(B, 1, H, W)`` (the face mask times the eye/mouth emphasis). With ``mask`` both images are
  multiplied by it before SSIM, so pixels outside the mask cannot reach the loss through SSIM's window either.
- ``mask_loss(pred_mask, mask)``: mean squared error of a learned mask against the face-without-hair mask.
- ``region_weights(points, size)``: ``(size, size)`` float32 eye/mouth emphasis from the 478 mediapipe landmarks
  in crop pixel coordinates (numpy in, numpy out; OpenCV imported when called). The face mask itself is
  ``align.face_mask``, the same one blending uses.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from swap_engine.landmarks import LEFT_BROW, LEFT_EYE, LIPS_OUTER, RIGHT_BROW, RIGHT_EYE

if TYPE_CHECKING:
    import numpy as np

# -----------------------------------------------------------------------------
# per-pixel losses (torch)


@lru_cache(maxsize=8)
def _gauss(window: int, sigma: float) -> torch.Tensor:
    x = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()  # (window,)


def _blur(x: torch.Tensor, window: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel of ``(B, C, H, W)``, 'same' size (reflect padding)."""
    c = x.shape[1]
    g = _gauss(window, sigma).to(x.device, x.dtype)
    pad = window // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, window).expand(c, 1, 1, window), groups=c)  # (B, C, H+2p, W)
    return F.conv2d(x, g.view(1, 1, window, 1).expand(c, 1, window, 1), groups=c)  # (B, C, H, W)


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM of two ``(B, 3, H, W)`` images in [0, 1], averaged over channels: ``(B, 1, H, W)``."""
    window = min(window, x.shape[-1] // 2 * 2 - 1)  # tiny test images
    c1, c2 = 0.01**2, 0.03**2
    n = x.shape[1]
    stats = _blur(torch.cat([x, y, x * x, y * y, x * y], 1), window, sigma)  # (B, 5C, H, W)
    mx, my, xx, yy, xy = torch.split(stats, n, 1)
    vx, vy, cxy = xx - mx * mx, yy - my * my, xy - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    mean: torch.Tensor = s.mean(1, keepdim=True)
    return mean


def face_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    ssim_weight: float = 1.0,
    l1_weight: float = 1.0,
) -> torch.Tensor:
    """Weighted mean of ``ssim_weight * (1 - SSIM) / 2 + l1_weight * |pred - target|`` (a 0-dim tensor).

    ``pred``/``target`` ``(B, 3, H, W)``; ``weight`` ``(B, 1, H, W)``, non-negative; ``mask`` ``(B, 1, H, W)`` in
    [0, 1] or None. Where ``weight`` and ``mask`` are 0 the target's pixels do not change the loss. Float32.
    """
    pred, target, weight = pred.float(), target.float(), weight.float()
    per_pixel = l1_weight * (pred - target).abs().mean(1, keepdim=True)  # (B, 1, H, W)
    if ssim_weight:
        if mask is not None:
            m = mask.float()
            pred, target = pred * m, target * m
        per_pixel = per_pixel + ssim_weight * (1 - ssim_map(pred, target)) / 2
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1e-6)


def skin_fill(target: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(B, 3, H, W)``: ``target``'s face (where ``mask`` ``(B, 1, H, W)`` is 1) carried smoothly beyond it — a
    mask-normalised Gaussian blur (``blur(target * mask) / blur(mask)``, ``sigma`` px). Only face pixels reach it:
    outside the mask it shows the skin's colour and shading, never hair or background."""
    window = min(int(6 * sigma) | 1, (target.shape[-1] // 2) * 2 - 1)
    m = mask.float()
    num = _blur(torch.cat([target.float() * m, m], 1), window, sigma)  # (B, 4, H, W)
    return num[:, :3] / num[:, 3:].clamp_min(1e-4)


def mask_loss(pred_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of a learned ``(B, 1, H, W)`` mask against the landmark mask."""
    return F.mse_loss(pred_mask.float(), mask.float())


def pixel_weight(mask: torch.Tensor, emphasis: torch.Tensor, background: float = 0.05) -> torch.Tensor:
    """The loss weight per pixel: the face mask (with ``background`` left outside it) times the eye/mouth emphasis."""
    return (background + (1 - background) * mask) * emphasis


# -----------------------------------------------------------------------------
# landmark maps (numpy + OpenCV)


def region_weights(
    points: np.ndarray, size: int, *, eyes: float = 3.0, mouth: float = 2.0, grow: float = 0.03
) -> np.ndarray:
    """``(size, size)`` float32: 1 everywhere, ``eyes`` on the eyes and brows, ``mouth`` on the lips.

    Each region is the convex hull of its contour, dilated by ``grow * size`` and softened, so a few pixels of
    landmark error still cover the region. Where regions overlap the larger weight wins.
    """
    import cv2
    import numpy as np

    out = np.ones((size, size), np.float32)
    radius = max(1, int(round(grow * size)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    for idx, value in (
        (RIGHT_EYE + RIGHT_BROW, eyes),
        (LEFT_EYE + LEFT_BROW, eyes),
        (LIPS_OUTER, mouth),
    ):
        region: np.ndarray = np.zeros((size, size), np.uint8)
        hull = cv2.convexHull(np.round(points[list(idx)]).astype(np.int32))
        cv2.fillConvexPoly(region, hull, 1)
        region = cv2.dilate(region, kernel).astype(np.float32)
        region = cv2.GaussianBlur(region, (0, 0), radius / 2)
        out = np.maximum(out, 1.0 + (value - 1.0) * region)
    return out


__all__ = [
    "skin_fill",
    "ssim_map",
    "face_loss",
    "mask_loss",
    "pixel_weight",
    "region_weights",
]
