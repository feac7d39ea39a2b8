"""Training augmentation on whole batches in torch (CPU or GPU): the classic random warp plus pose and colour jitter.

``augment_batch`` takes faces ``(B, 3, S, S)`` float in ``[0, 1]`` and optional per-pixel maps ``(B, K, S, S)``
(mask, loss weights) and returns ``(warped, target, maps)``:

- ``target``: the face after a random rotation, zoom, shift, horizontal flip and colour change;
- ``warped``: the same face through the same transform *and* the classic deepfakes random warp (a 5x5 grid of
  random offsets, smoothly interpolated), so the autoencoder must learn a face, not copy pixels;
- ``maps``: the maps moved with ``target`` (never warped, never colour-changed).

Everything is two ``grid_sample`` calls and a few small matmuls per batch; random numbers come from a CPU ``torch.Generator`` so a run is
reproducible and its state can be checkpointed, whatever the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotation: float = 10.0  # degrees, uniform +-
    zoom: float = 0.05  # relative, uniform +-
    shift: float = 0.05  # fraction of the side, uniform +-
    flip: float = 0.5  # probability of a horizontal flip
    # std of the 5x5 grid offsets, in [-1, 1] image units: half the classic (5 px on a 160 px span). At equal steps
    # the faces come out sharper and more like the person (docs/QUALITY.md, "Round 3"); it needs the skin fill in
    # training (TrainConfig.skin_fill), without which a turned actor's near cheek showed untrained stripes.
    warp: float = 0.03
    warp_grid: int = 5
    brightness: float = 0.08  # added, uniform +-
    contrast: float = 0.15  # relative, uniform +-
    saturation: float = 0.15  # relative, uniform +-


NO_AUGMENT = AugmentConfig(0.0, 0.0, 0.0, 0.0, 0.0, 5, 0.0, 0.0, 0.0)


def _uniform(n: int, spread: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=gen) * 2 - 1) * spread


def random_affine(n: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """``(n, 2, 3)`` matrices mapping output grid coordinates to input coordinates (``affine_grid``'s theta)."""
    angle = _uniform(n, math.radians(cfg.rotation), gen)
    scale = 1.0 + _uniform(n, cfg.zoom, gen)
    shift = _uniform(2 * n, 2 * cfg.shift, gen).view(n, 2)  # [-1, 1] spans the side twice
    flip = torch.where(torch.rand(n, generator=gen) < cfg.flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )
    return theta  # (n, 2, 3)


def _cubic_upsampler(grid: int, size: int) -> torch.Tensor:
    """``(size, grid)`` matrix U such that ``U @ C @ U.T`` is the bicubic upsampling of a ``grid`` x ``grid`` C."""
    # Bicubic interpolation is separable and linear: upsampling the unit vectors once gives the 1-D weights,
    # and two small matmuls replace F.interpolate, which is ~10x slower on CPU for many tiny inputs.
    eye = torch.eye(grid).view(grid, 1, 1, grid)
    return (
        F.interpolate(eye, size=(1, size), mode="bicubic", align_corners=True).view(grid, size).T.contiguous()
    )


def random_warp_field(n: int, size: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """``(n, size, size, 2)`` smooth offsets: a ``warp_grid`` x ``warp_grid`` grid of normal offsets, upsampled."""
    coarse = torch.randn(n, 2, cfg.warp_grid, cfg.warp_grid, generator=gen) * cfg.warp  # (n, 2, g, g)
    up = _cubic_upsampler(cfg.warp_grid, size)  # (S, g)
    field = up @ coarse @ up.T  # (n, 2, S, S)
    return field.permute(0, 2, 3, 1)  # (n, S, S, 2)


def _base_grid(size: int, device: torch.device) -> torch.Tensor:
    lin = torch.linspace(-1.0, 1.0, size, device=device)
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([x, y, torch.ones_like(x)], -1)  # (S, S, 3): homogeneous (x, y, 1)


def colour_matrices(n: int, cfg: AugmentConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample saturation and contrast as ``(n, 3, 3)`` matrices, brightness as ``(n, 3)``; see colour_jitter."""
    bright = _uniform(n, cfg.brightness, gen)
    contrast = 1 + _uniform(n, cfg.contrast, gen)
    sat = 1 + _uniform(n, cfg.saturation, gen)
    luma = torch.tensor([0.299, 0.587, 0.114])
    # saturation: grey + (x - grey) * s  ==  (s I + (1 - s) 1 luma^T) x
    mat = sat.view(n, 1, 1) * torch.eye(3) + (1 - sat).view(n, 1, 1) * luma.view(1, 1, 3)
    return mat * contrast.view(n, 1, 1), torch.stack([bright, contrast], 1)


def colour_jitter(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Per-sample saturation, contrast (about the image's mean grey) and brightness of ``(B, 3, H, W)`` in [0, 1].

    All three are affine in the colour, so they are one ``(3, 3)`` matrix and an offset per sample: one bmm.
    """
    n = images.shape[0]
    mat, extra = (t.to(images.device, images.dtype) for t in colour_matrices(n, cfg, gen))
    bright, contrast = extra[:, 0], extra[:, 1]
    luma = images.new_tensor([0.299, 0.587, 0.114])
    mean = torch.einsum("nchw,c->n", images, luma) / (images.shape[2] * images.shape[3])  # (n,) mean grey
    offset = (mean * (1 - contrast) + bright).view(n, 1, 1)  # (n, 1, 1)
    out = torch.baddbmm(offset, mat, images.flatten(2))  # (n, 3, H*W)
    return out.view_as(images).clamp_(0.0, 1.0)


def augment_batch(
    images: torch.Tensor,
    maps: torch.Tensor | None,
    cfg: AugmentConfig,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Return ``(warped, target, maps)`` for a training step; see the module docstring."""
    n, _, size, _ = images.shape
    device = images.device
    theta = random_affine(n, cfg, gen).to(device, images.dtype)  # (n, 2, 3)
    base = _base_grid(size, device).to(images.dtype)  # (S, S, 3)
    grid_target = torch.einsum("hwk,njk->nhwj", base, theta)  # (n, S, S, 2)
    if cfg.warp > 0:
        warped = base[..., :2] + random_warp_field(n, size, cfg, gen).to(device, images.dtype)  # (n, S, S, 2)
        grid_warp = torch.einsum(
            "nhwk,njk->nhwj", torch.cat([warped, base[..., 2:].expand(n, -1, -1, 1)], -1), theta
        )
    else:
        grid_warp = grid_target
    # Colour first (the same change for input and target), then the two samplings; maps follow the target only.
    jittered = colour_jitter(images, cfg, gen) if _has_colour(cfg) else images
    stack = jittered if maps is None else torch.cat([jittered, maps.to(images.dtype)], 1)  # (n, 3+K, S, S)
    def sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)

    target_all = sample(stack, grid_target)  # (n, 3+K, S, S)
    warped_rgb = sample(jittered, grid_warp) if cfg.warp > 0 else target_all[:, :3]
    target = target_all[:, :3]
    out_maps = target_all[:, 3:] if maps is not None else None
    return warped_rgb, target, out_maps


def _has_colour(cfg: AugmentConfig) -> bool:
    return cfg.brightness > 0 or cfg.contrast > 0 or cfg.saturation > 0


__all__ = [
    "AugmentConfig",
    "NO_AUGMENT",
    "augment_batch",
    "colour_jitter",
    "colour_matrices",
    "random_affine",
    "random_warp_field",
]
