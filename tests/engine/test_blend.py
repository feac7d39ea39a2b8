"""Masks and blending: feathering, intersection, alpha/Poisson blends, and paste-back that leaves the rest alone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from swap_engine.blend import (
    alpha_blend,
    combine_masks,
    composite,
    erode_feather,
    margins_for,
    poisson_blend,
)

S = 256


def _frame(h: int = 360, w: int = 640, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)


def _crop(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    face = np.full((S, S, 3), (205, 160, 135), np.uint8)
    return np.clip(face + rng.normal(0, 8, face.shape), 0, 255).astype(np.uint8)


def _hull(size: int = S) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (size // 2, size * 11 // 20), (size * 3 // 10, size * 2 // 5), 0, 0, 360, 1.0, -1)
    return mask


def _matrix(cx: float, cy: float, face_px: float, angle: float = 12.0) -> np.ndarray:
    """Frame->crop similarity putting a ``face_px`` wide face centred at (cx, cy) into the crop centre."""
    scale = S * 0.6 / face_px
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    m[:, 2] += (S / 2 - cx, S / 2 - cy)
    return m


def _untouched_zone(frame_shape: tuple[int, ...], matrix: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Frame pixels the warped mask does not reach, with a 1 px safety ring for sampling-grid rounding."""
    h, w = frame_shape[:2]
    warped = cv2.warpAffine(mask, matrix, (w, h), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
    return cv2.dilate((warped > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) == 0


def test_margins_scale_with_face_size() -> None:
    assert margins_for(200) == (8, 12)
    assert margins_for(400) == (16, 24)
    assert margins_for(0) == (0, 0)


def test_erode_feather_shrinks_and_softens() -> None:
    hull = _hull()
    out = erode_feather(hull, 10, 8)
    assert out.dtype == np.float32 and out.shape == hull.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.sum() < hull.sum()
    assert out[S // 2, S // 2] == pytest.approx(1.0)
    edge = out[(out > 0.02) & (out < 0.98)]
    assert edge.size > 500  # a soft ramp exists
    assert np.all(out[hull == 0] < 0.1)  # with erode >= feather the ramp stays inside the hull
    np.testing.assert_array_equal(erode_feather(hull, 0, 0), hull)


def test_erode_feather_treats_image_border_as_outside() -> None:
    full = np.ones((64, 64), np.float32)
    out = erode_feather(full, 4, 2)
    assert out[0].max() < 0.05 and out[:, -1].max() < 0.05
    assert out[32, 32] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        erode_feather(full, -1, 2)


def test_combine_masks_is_intersection_and_resizes() -> None:
    hull = _hull()
    assert np.array_equal(combine_masks(hull, None), hull)
    learned = np.zeros((S // 2, S // 2), np.float32)
    learned[:, : S // 4] = 0.7  # left half, at the decoder's smaller size
    both = combine_masks(hull, learned)
    assert both.shape == hull.shape and both.dtype == np.float32
    assert both[:, S // 2 + 2 :].max() == 0.0
    assert both.max() == pytest.approx(0.7)
    assert np.all(both <= hull)


def test_alpha_blend_exact_at_zero_and_one() -> None:
    dst, src = _frame(64, 64, 1), _frame(64, 64, 2)
    mask = np.zeros((64, 64), np.float32)
    mask[:, 32:] = 1.0
    mask[:, 20:32] = 0.5
    out = alpha_blend(dst, src, mask)
    np.testing.assert_array_equal(out[:, :20], dst[:, :20])
    np.testing.assert_array_equal(out[:, 32:], src[:, 32:])
    mid = (dst[:, 20:32].astype(int) + src[:, 20:32]) / 2
    assert np.abs(out[:, 20:32] - mid).max() <= 1.0


@pytest.mark.parametrize("mode", ["alpha", "poisson"])
def test_composite_changes_only_the_masked_region(mode: str) -> None:
    frame = _frame()
    before = frame.copy()
    m = _matrix(330, 170, 150)
    mask = erode_feather(_hull(), 8, 8)
    out = composite(frame, _crop(), m, mask, mode=mode)  # type: ignore[arg-type]
    assert out is not frame and out.dtype == np.uint8 and out.shape == frame.shape
    np.testing.assert_array_equal(frame, before)  # input untouched
    outside = _untouched_zone(frame.shape, m, mask)
    np.testing.assert_array_equal(out[outside], frame[outside])
    changed = np.any(out != frame, axis=2)
    assert changed.sum() > 5000


def test_composite_alpha_puts_the_face_where_the_matrix_says() -> None:
    frame = _frame()
    m = _matrix(330, 170, 150)
    crop = _crop()
    mask = erode_feather(_hull(), 8, 8)
    out = composite(frame, crop, m, mask)
    # The centre of the crop maps to (330, 170): there the face colour has replaced the frame.
    patch = out[165:176, 325:336].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(patch, (205, 160, 135), atol=6)


@pytest.mark.parametrize("mode", ["alpha", "poisson"])
@pytest.mark.parametrize("center", [(20, 30), (630, 350), (-40, 180), (320, 395), (900, 900)])
def test_composite_at_the_frame_border(mode: str, center: tuple[int, int]) -> None:
    frame = _frame()
    m = _matrix(*center, face_px=160)
    mask = erode_feather(_hull(), 8, 8)
    out = composite(frame, _crop(), m, mask, mode=mode)  # type: ignore[arg-type]
    assert out.shape == frame.shape
    outside = _untouched_zone(frame.shape, m, mask)
    np.testing.assert_array_equal(out[outside], frame[outside])


def test_composite_empty_mask_returns_an_equal_copy() -> None:
    frame = _frame()
    out = composite(frame, _crop(), _matrix(300, 180, 150), np.zeros((S, S), np.float32), mode="poisson")
    assert out is not frame
    np.testing.assert_array_equal(out, frame)
    with pytest.raises(ValueError):
        composite(frame, _crop(), _matrix(300, 180, 150), _hull(), mode="magic")  # type: ignore[arg-type]


def test_poisson_blend_of_the_frame_itself_changes_nothing() -> None:
    # Same gradients and same boundary: a correctly placed clone reproduces the frame (a shift would not).
    frame = cv2.GaussianBlur(_frame(), (0, 0), 2)
    mask = erode_feather(_hull(160), 6, 4)
    patch = frame[100:260, 200:360]
    out = poisson_blend(frame, patch, mask, (280, 180))
    assert np.abs(out.astype(int) - frame).max() <= 2


def test_poisson_blend_patch_hanging_off_the_corner() -> None:
    frame = _frame()
    mask = erode_feather(_hull(160), 6, 4)
    patch = np.full((160, 160, 3), 200, np.uint8)
    out = poisson_blend(frame, patch, mask, (10, 350))
    rest = np.ones(frame.shape[:2], bool)
    rest[270:, :90] = False  # the part of the patch inside the frame
    np.testing.assert_array_equal(out[rest], frame[rest])
    assert np.any(out[~rest] != frame[~rest])


def test_poisson_blend_falls_back_on_tiny_masks() -> None:
    frame = _frame()
    mask = np.zeros((9, 9), np.float32)
    mask[4, 4] = 1.0
    out = poisson_blend(frame, np.full((9, 9, 3), 255, np.uint8), mask, (100, 100))
    changed = np.argwhere(np.any(out != frame, axis=2))
    assert len(changed) <= 1 and (len(changed) == 0 or tuple(changed[0]) == (100, 100))


@pytest.mark.parametrize("side", [120, 420])  # solved at full resolution / as a 256 px membrane, upsampled
def test_poisson_takes_the_frame_colour_where_alpha_keeps_the_face_colour(side: int) -> None:
    frame = cv2.GaussianBlur(_frame(480, 640), (0, 0), 3)
    y0, x0 = 240 - side // 2, 320 - side // 2
    region = frame[y0 : y0 + side, x0 : x0 + side]
    patch = np.clip(region.astype(int) + (40, 25, -30), 0, 255).astype(np.uint8)  # same texture, other colour
    mask = erode_feather(_hull(side), side // 20, side // 20)
    core = mask > 0.99
    out = poisson_blend(frame, patch, mask, (320, 240))[y0 : y0 + side, x0 : x0 + side]
    alpha = alpha_blend(region, patch, mask)
    assert np.abs(alpha[core].astype(int) - region[core]).mean() > 25
    assert np.abs(out[core].astype(int) - region[core]).mean() < 3
