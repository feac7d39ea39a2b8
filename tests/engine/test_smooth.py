"""One Euro filter: jitter on a still face drops a lot, motion is followed with bounded lag, any shape works."""

from __future__ import annotations

import numpy as np
import pytest

from swap_engine.smooth import OneEuroFilter

FPS = 30
N = 150


@pytest.fixture
def points() -> np.ndarray:
    return np.random.default_rng(0).uniform(100, 500, (478, 2)).astype(np.float32)


def _run(f: OneEuroFilter, truth: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array(
        [f((x + rng.normal(0, sigma, x.shape)).astype(np.float32), i / FPS) for i, x in enumerate(truth)]
    )


def test_static_jitter_is_reduced_a_lot(points: np.ndarray) -> None:
    truth = np.repeat(points[None], N, axis=0)
    raw = _run(OneEuroFilter(min_cutoff=1e9, beta=0.0), truth, 1.5)  # a filter that lets everything through
    out = _run(OneEuroFilter(vector_axis=-1), truth, 1.5)
    settled = slice(30, None)
    raw_f2f = np.abs(np.diff(raw[settled], axis=0)).mean()
    out_f2f = np.abs(np.diff(out[settled], axis=0)).mean()
    assert out_f2f < raw_f2f / 4  # frame-to-frame shake, what a viewer sees (measured: 6.5x less)
    raw_err = np.abs(raw[settled] - truth[settled]).mean()
    out_err = np.abs(out[settled] - truth[settled]).mean()
    assert out_err < raw_err / 2


@pytest.mark.parametrize("speed", [60.0, 300.0, 900.0])  # px/s: a slow drift to a quick turn of the head
def test_ramp_is_followed_with_bounded_lag(points: np.ndarray, speed: float) -> None:
    t = np.arange(N) / FPS
    shift = np.where(t < 1.0, 0.0, (t - 1.0) * speed)
    truth = points[None] + np.stack([shift, 0.5 * shift], axis=1)[:, None, :].astype(np.float32)
    out = _run(OneEuroFilter(vector_axis=-1), truth, 1.0)
    lag = np.linalg.norm((truth - out).mean(axis=1), axis=1)  # mean over points: noise averages out
    assert lag[40:].max() < 5.0  # px; an unfiltered tracker would be ~1 px off from noise alone


def test_step_is_caught_within_a_few_frames(points: np.ndarray) -> None:
    truth = np.repeat(points[None], N, axis=0)
    truth[60:] += 25.0
    out = _run(OneEuroFilter(vector_axis=-1), truth, 1.0)
    err = np.abs(out - truth).mean(axis=(1, 2))
    assert err[64] < 2.0 and err[70:].max() < 2.0


def test_any_shape_dtype_and_first_sample() -> None:
    m = np.array([[1.0, 0.1, 30.0], [-0.1, 1.0, 40.0]])
    f = OneEuroFilter()
    first = f(m, 0.0)
    np.testing.assert_array_equal(first, m)
    assert first.dtype == np.float64 and first is not m
    out = f(m + 1.0, 1 / FPS)
    assert out.shape == (2, 3) and np.all(out > m) and np.all(out < m + 1.0)
    assert OneEuroFilter()(np.arange(5), 0.0).dtype == np.float64
    assert OneEuroFilter()(np.zeros((3, 2), np.float32), 0.0).dtype == np.float32


def test_repeated_time_and_reset_and_shape_change() -> None:
    f = OneEuroFilter()
    f(np.zeros(4), 0.0)
    a = f(np.ones(4), 0.1)
    np.testing.assert_array_equal(f(np.full(4, 9.0), 0.1), a)  # same timestamp: previous output
    with pytest.raises(ValueError):
        f(np.zeros(5), 0.2)
    f.reset()
    np.testing.assert_array_equal(f(np.full(5, 7.0), 0.0), np.full(5, 7.0))  # after a cut: no memory
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0.0)
