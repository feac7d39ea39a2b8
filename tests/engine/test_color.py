"""Colour transfer: masked statistics match, the outside of the mask is ignored, the stabilizer damps flicker."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from swap_engine.color import ColorStabilizer, histogram_match, reinhard_lab

S = 128


def _face(seed: int, tint: tuple[int, int, int]) -> np.ndarray:
    """A smooth, skin-like textured crop with a colour cast."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (S, S, 3)).astype(np.float32), (0, 0), 3)
    base = np.array(tint, np.float32) + noise
    yy = np.linspace(-20, 20, S, dtype=np.float32)[:, None, None]  # a soft light gradient
    return np.clip(base + yy, 0, 255).astype(np.uint8)


def _ellipse_mask(soft: bool = False) -> np.ndarray:
    mask = np.zeros((S, S), np.float32)
    cv2.ellipse(mask, (S // 2, S // 2), (S // 3, S * 2 // 5), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), 4) if soft else mask


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)


def _masked_stats(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    px = _lab(rgb)[mask > 0.5]
    return px.mean(0), px.std(0)


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    return _face(1, (200, 150, 120)), _face(2, (120, 110, 150))


def test_reinhard_matches_masked_mean_and_std(pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, ref = pair
    mask = _ellipse_mask()
    before = src.copy()
    out = reinhard_lab(src, ref, mask)
    assert out.dtype == np.uint8 and out.shape == src.shape
    assert np.array_equal(src, before)  # input untouched
    mean_o, std_o = _masked_stats(out, mask)
    mean_r, std_r = _masked_stats(ref, mask)
    mean_s, _ = _masked_stats(src, mask)
    assert np.abs(mean_s - mean_r).max() > 10  # the test pair really differs
    np.testing.assert_allclose(mean_o, mean_r, atol=0.7)
    np.testing.assert_allclose(std_o, std_r, rtol=0.1, atol=0.5)


def test_reinhard_ignores_pixels_outside_the_mask(pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, ref = pair
    mask = _ellipse_mask(soft=True)
    ref2 = ref.copy()
    ref2[mask == 0] = (0, 255, 0)  # green screen around the face must not tint it
    np.testing.assert_array_equal(reinhard_lab(src, ref, mask), reinhard_lab(src, ref2, mask))


def test_empty_mask_leaves_face_unchanged(pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, ref = pair
    empty = np.zeros((S, S), np.float32)
    np.testing.assert_array_equal(reinhard_lab(src, ref, empty), src)
    np.testing.assert_array_equal(histogram_match(src, ref, empty), src)
    np.testing.assert_array_equal(ColorStabilizer().apply(src, ref, empty), src)


def test_mask_none_uses_whole_crop(pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, ref = pair
    ones = np.ones((S, S), np.float32)
    np.testing.assert_array_equal(reinhard_lab(src, ref, None), reinhard_lab(src, ref, ones))


def test_histogram_match_follows_reference_quantiles(pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, ref = pair
    mask = _ellipse_mask()
    out = histogram_match(src, ref, mask)
    inside = mask > 0.5
    for c in range(3):
        q_out = np.percentile(out[..., c][inside], [10, 50, 90])
        q_ref = np.percentile(ref[..., c][inside], [10, 50, 90])
        np.testing.assert_allclose(q_out, q_ref, atol=2.0)


def test_histogram_match_of_identical_images_is_identity(pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, _ = pair
    np.testing.assert_array_equal(histogram_match(src, src, _ellipse_mask()), src)


def test_bad_inputs_raise(pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, ref = pair
    with pytest.raises(ValueError):
        reinhard_lab(src, ref[:64], None)
    with pytest.raises(ValueError):
        histogram_match(src.astype(np.float32), ref, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ColorStabilizer(method="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ColorStabilizer(momentum=1.0)


def test_stabilizer_with_zero_momentum_is_per_frame_transfer(pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, ref = pair
    mask = _ellipse_mask(soft=True)
    np.testing.assert_array_equal(
        ColorStabilizer(momentum=0.0).apply(src, ref, mask), reinhard_lab(src, ref, mask)
    )
    stab = ColorStabilizer("histogram", momentum=0.0)
    np.testing.assert_array_equal(stab.apply(src, ref, mask), histogram_match(src, ref, mask))


def _noisy_shot(n: int) -> list[np.ndarray]:
    """The target face over ``n`` frames: steady scene, each frame's colour wobbling by a few levels."""
    rng = np.random.default_rng(7)
    ref = _face(2, (120, 110, 150)).astype(np.int16)
    return [np.clip(ref + rng.integers(-10, 11, 3), 0, 255).astype(np.uint8) for _ in range(n)]


def _frame_to_frame_change(outputs: list[np.ndarray], mask: np.ndarray) -> float:
    means = np.array([_masked_stats(o, mask)[0] for o in outputs])
    return float(np.abs(np.diff(means, axis=0)).mean())


@pytest.mark.parametrize("method", ["reinhard", "histogram"])
def test_stabilizer_reduces_flicker(method: str, pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, _ = pair
    mask = _ellipse_mask(soft=True)
    refs = _noisy_shot(30)
    per_frame = reinhard_lab if method == "reinhard" else histogram_match
    raw = [per_frame(src, r, mask) for r in refs]
    stab = ColorStabilizer(method, momentum=0.8)  # type: ignore[arg-type]
    smooth = [stab.apply(src, r, mask) for r in refs]
    assert _frame_to_frame_change(smooth, mask) < 0.5 * _frame_to_frame_change(raw, mask)


def test_stabilizer_follows_a_lasting_change_and_resets(pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, ref = pair
    mask = _ellipse_mask(soft=True)
    dark = (ref * 0.6).astype(np.uint8)
    stab = ColorStabilizer(momentum=0.8)
    for _ in range(10):
        stab.apply(src, ref, mask)
    for _ in range(25):  # the light goes down and stays down: within a second the face follows
        out = stab.apply(src, dark, mask)
    target = _masked_stats(reinhard_lab(src, dark, mask), mask)[0]
    np.testing.assert_allclose(_masked_stats(out, mask)[0], target, atol=1.0)
    stab.reset()
    np.testing.assert_array_equal(stab.apply(src, ref, mask), reinhard_lab(src, ref, mask))


def test_stabilizer_limits_how_much_contrast_it_adds() -> None:
    """A flat, soft decoder face matched to a contrasty actor: the light and tint move, the spread barely does."""
    rng = np.random.default_rng(3)
    soft = np.full((64, 64, 3), 150, np.uint8)
    soft[20:30, 15:50] = 120  # faint eyes
    soft = cv2.GaussianBlur(soft, (0, 0), 3)
    actor = np.clip(rng.normal(180, 45, (64, 64, 3)), 0, 255).astype(np.uint8)
    lightness = lambda img: cv2.cvtColor(img, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float64)  # noqa: E731
    free = ColorStabilizer(momentum=0.0).apply(soft, actor, None)
    capped = ColorStabilizer(momentum=0.0, max_gain=1.25).apply(soft, actor, None)
    assert lightness(free).std() > 2.0 * lightness(soft).std()  # the default restores the actor's contrast
    assert lightness(capped).std() <= 1.25 * lightness(soft).std() + 1.0
    assert abs(lightness(capped).mean() - lightness(actor).mean()) < 2.0  # but the light is matched all the same


def test_a_face_blended_larger_than_drawn_is_matched_on_the_drawn_sizes_statistics() -> None:
    small_face, small_ref = _face(1, (200, 150, 120)), _face(2, (120, 110, 150))
    big = 4 * S
    face = cv2.resize(small_face, (big, big), interpolation=cv2.INTER_CUBIC)  # a drawn face, scaled up: smooth
    grain = np.random.default_rng(3).normal(0, 30, (big, big, 1)).astype(np.float32)  # the actor's fine texture
    ref = np.clip(cv2.resize(small_ref, (big, big), interpolation=cv2.INTER_CUBIC) + grain, 0, 255).astype(np.uint8)
    fitted = ColorStabilizer(momentum=0.0).apply(face, ref, None, fit=(small_face, small_ref, None))
    on_small = ColorStabilizer(momentum=0.0).apply(small_face, small_ref, None)
    grainy = ColorStabilizer(momentum=0.0).apply(face, ref, None)
    # The same mapping as at the drawn size; fitted on the large crops the grain would count as spread.
    shrink = cv2.resize(fitted, (S, S), interpolation=cv2.INTER_AREA).astype(np.float64)
    assert np.abs(shrink - on_small).mean() < 1.5
    assert _lab(grainy)[..., 0].std() > 1.1 * _lab(fitted)[..., 0].std()
