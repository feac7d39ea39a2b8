"""Colour-match a generated face crop to the target face crop over a mask (Reinhard LAB, histogram), stable in time.

Contract: ``src`` (the decoder's face) and ``ref`` (the same crop cut from the target frame) are RGB ``uint8``
``(S, S, 3)`` images of the same shape; ``mask`` is ``float32`` ``(S, S)`` in ``[0, 1]`` and weights the pixels the
statistics are computed from (soft masks count fractionally; ``None`` means the whole crop). The colour mapping is
fitted on the masked pixels and applied to the *whole* ``src`` crop, returned as a new RGB ``uint8`` array: the blender
decides later which pixels are used. A mask with (almost) no weight leaves ``src`` unchanged.

Default: Reinhard transfer in CIE LAB (Reinhard et al. 2001). It moves six numbers (a mean and a spread per LAB
channel), so it is cheap (a few milliseconds on a 256 px crop, mostly the LAB conversions), cannot invent banding
or posterisation, works in a space where lightness and the two colour axes are nearly independent (so a warmer
light does not change contrast), and is easy to keep steady over time (``ColorStabilizer`` averages those six
numbers per side). Histogram matching fits the whole tonal curve, which also fixes contrast/gamma differences,
but it follows every change of the pixels under the mask (an opening mouth, a hand) and can posterise when a
channel's histogram is narrow, so it is the option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Method = Literal["reinhard", "histogram"]
METHODS: tuple[str, ...] = ("reinhard", "histogram")

# Below this total mask weight (in pixels) the statistics are noise: leave the face alone.
MIN_WEIGHT = 16.0
# The spread ratio is clamped so that a flat crop (a tiny std) cannot blow up noise or saturate the face.
MIN_GAIN, MAX_GAIN = 1 / 3, 3.0
_EPS = 1e-6


@dataclass(frozen=True)
class LabStats:
    """Weighted mean and standard deviation of the L, a, b channels (``(3,)`` float64 each; L in 0..100)."""

    mean: np.ndarray
    std: np.ndarray


def _check(src: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> None:
    if src.ndim != 3 or src.shape[2] != 3 or src.dtype != np.uint8:
        raise ValueError(f"src must be RGB uint8 (H, W, 3), got {src.dtype} {src.shape}")
    if ref.shape != src.shape or ref.dtype != np.uint8:
        raise ValueError(f"ref must match src {src.shape} uint8, got {ref.dtype} {ref.shape}")
    if mask is not None and mask.shape != src.shape[:2]:
        raise ValueError(f"mask must be {src.shape[:2]}, got {mask.shape}")


def _weights(mask: np.ndarray | None, n: int) -> np.ndarray | None:
    """The mask as a flat float32 weight vector, or None when it carries too little weight to fit anything."""
    if mask is None:
        return np.ones(n, np.float32)
    w = np.asarray(mask, np.float32).reshape(-1)
    return w if float(w.sum()) >= MIN_WEIGHT else None


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    # float input gives the unquantised LAB (L 0..100, a/b about -128..127); uint8 LAB would round the result twice.
    scaled = rgb.astype(np.float32)
    scaled *= np.float32(1 / 255)
    return cv2.cvtColor(scaled, cv2.COLOR_RGB2LAB)


def _from_lab(lab: np.ndarray) -> np.ndarray:
    rgb: np.ndarray = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    # In-place clamping: np.clip on a float image costs several times more.
    rgb *= np.float32(255)
    np.maximum(rgb, 0, out=rgb)
    rgb += np.float32(0.5)
    np.minimum(rgb, 255, out=rgb)
    return rgb.astype(np.uint8)


def lab_stats(lab: np.ndarray, weights: np.ndarray) -> LabStats:
    """Weighted per-channel mean and std of an ``(H, W, 3)`` float32 LAB image, ``weights`` flat ``(H*W,)``."""
    flat = lab.reshape(-1, 3)
    total = float(weights.sum())
    mean = (weights @ flat).astype(np.float64) / total
    # Centre before squaring: E[x^2] - E[x]^2 in float32 loses the small spreads of a skin patch.
    # (cv2 with a per-channel scalar: numpy broadcasting over a length-3 last axis is ten times slower.)
    centred = cv2.subtract(lab, np.array([*mean.tolist(), 0.0])).reshape(-1, 3)
    var = (weights @ (centred * centred)).astype(np.float64) / total
    return LabStats(mean=mean, std=np.sqrt(np.maximum(var, 0.0)))


def _reinhard_apply(
    lab_src: np.ndarray, s: LabStats, r: LabStats, max_gain: float = MAX_GAIN
) -> np.ndarray:
    gain = np.clip(r.std / np.maximum(s.std, _EPS), 1.0 / max_gain, max_gain)
    offset = r.mean - gain * s.mean
    # Per-channel gain and offset as one 3x4 affine colour transform (one pass, multi-threaded).
    affine = np.hstack([np.diag(gain), offset[:, None]])
    return _from_lab(cv2.transform(lab_src, affine))


def reinhard_lab(src: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Shift and scale ``src``'s LAB channels so their masked mean/std equal ``ref``'s; returns a new RGB uint8 crop.

    The masked means match exactly (up to uint8 rounding and gamut clipping); the spreads match unless the ratio
    falls outside ``[MIN_GAIN, MAX_GAIN]``.
    """
    _check(src, ref, mask)
    w = _weights(mask, src.shape[0] * src.shape[1])
    if w is None:
        return src.copy()
    lab_src, lab_ref = _to_lab(src), _to_lab(ref)
    return _reinhard_apply(lab_src, lab_stats(lab_src, w), lab_stats(lab_ref, w))


_LEVELS = np.arange(256, dtype=np.float64)


def histogram_lut(src: np.ndarray, ref: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(3, 256)`` float64 lookup table per RGB channel mapping src levels onto ref levels with equal masked CDF."""
    lut = np.empty((3, 256), np.float64)
    for c in range(3):
        h_src = np.bincount(src[..., c].reshape(-1), weights=weights, minlength=256)
        h_ref = np.bincount(ref[..., c].reshape(-1), weights=weights, minlength=256)
        # Mid-point CDFs: a level's quantile is the middle of its bin, so identical inputs map to themselves.
        cdf_src = (np.cumsum(h_src) - 0.5 * h_src) / h_src.sum()
        cdf_ref = (np.cumsum(h_ref) - 0.5 * h_ref) / h_ref.sum()
        # Fit the curve at the levels the masked src really has (strictly increasing sample points) ...
        have_src, have_ref = h_src > 0, h_ref > 0
        levels = _LEVELS[have_src]
        mapped = np.interp(cdf_src[have_src], cdf_ref[have_ref], _LEVELS[have_ref])
        # ... and carry it to the other levels (those only outside the mask) linearly, beyond the ends as a shift,
        # so the table stays monotone and the same image maps onto itself.
        lut[c] = np.interp(_LEVELS, levels, mapped)
        low, high = _LEVELS < levels[0], _LEVELS > levels[-1]
        lut[c, low] = mapped[0] + (_LEVELS[low] - levels[0])
        lut[c, high] = mapped[-1] + (_LEVELS[high] - levels[-1])
    return lut


def _apply_lut(src: np.ndarray, lut: np.ndarray) -> np.ndarray:
    table = np.clip(np.rint(lut), 0, 255).astype(np.uint8)  # (3, 256)
    # cv2.LUT with a 3-channel table maps each channel with its own column: (256, 1, 3).
    return cv2.LUT(src, np.ascontiguousarray(table.T.reshape(256, 1, 3)))


def histogram_match(src: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Per-RGB-channel CDF matching: map ``src`` so its masked histogram follows ``ref``'s; returns a new RGB crop."""
    _check(src, ref, mask)
    w = _weights(mask, src.shape[0] * src.shape[1])
    if w is None:
        return src.copy()
    return _apply_lut(src, histogram_lut(src, ref, w.astype(np.float64)))


class ColorStabilizer:
    """Colour transfer whose fitted parameters are smoothed over the frames of a shot, so the face does not flicker.

    Per-frame transfer follows every wobble of the statistics under the mask (landmark jitter moves hair or
    background in and out of it, compression noise, a hand passing), and the whole face's colour jumps with them.
    Here each frame's statistics are blended into a running exponential average, ``state = momentum * state +
    (1 - momentum) * new``, and the transfer uses the averages: for ``"reinhard"`` the LAB mean/std of both the
    generated face and the target face (so the per-channel gain/offset is smooth and changes the face's own
    expressions only as much as the target's do); for ``"histogram"`` the lookup table itself.

    ``momentum`` 0 is plain per-frame transfer; the default 0.8 has a time constant of about 5 frames (0.2 s at
    25 fps): lighting changes in the scene are followed within half a second, frame-to-frame noise is damped
    about threefold. Call ``reset()`` at a scene cut or when the tracked face is lost, so the next shot starts from
    its own statistics.
    """

    def __init__(self, method: Method = "reinhard", momentum: float = 0.8, max_gain: float = MAX_GAIN) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown colour method {method!r}; use one of {', '.join(METHODS)}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.method: Method = method
        self.momentum = float(momentum)
        self.max_gain = float(max_gain)  # Reinhard: the largest change of a channel's spread (and 1/it the least)
        self._src: LabStats | None = None
        self._ref: LabStats | None = None
        self._lut: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the running statistics (scene cut, face lost): the next frame is matched on its own."""
        self._src = self._ref = None
        self._lut = None

    def _ema(self, old: np.ndarray | None, new: np.ndarray) -> np.ndarray:
        return new if old is None else self.momentum * old + (1.0 - self.momentum) * new

    def apply(
        self,
        src: np.ndarray,
        ref: np.ndarray,
        mask: np.ndarray | None,
        *,
        fit: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """Colour-match ``src`` to ``ref`` like ``reinhard_lab``/``histogram_match``, with smoothed parameters.

        ``fit``: ``(src, ref, mask)`` of another size to fit the parameters on instead (a face blended at a larger
        size than it was drawn is matched on the statistics at the drawn size, where the reference's fine texture,
        which the face cannot have, does not count as spread). A frame whose mask has (almost) no weight leaves the
        running state untouched; the face is then mapped with the last parameters (or returned unchanged if none).
        """
        _check(src, ref, mask)
        fit_src, fit_ref, fit_mask = (src, ref, mask) if fit is None else fit
        if fit is not None:
            _check(fit_src, fit_ref, fit_mask)
        w = _weights(fit_mask, fit_src.shape[0] * fit_src.shape[1])
        if self.method == "histogram":
            if w is not None:
                self._lut = self._ema(self._lut, histogram_lut(fit_src, fit_ref, w.astype(np.float64)))
            return src.copy() if self._lut is None else _apply_lut(src, self._lut)

        lab_src = _to_lab(src)
        if w is not None:
            s, r = lab_stats(lab_src if fit is None else _to_lab(fit_src), w), lab_stats(_to_lab(fit_ref), w)
            if self._src is None or self._ref is None:
                self._src, self._ref = s, r
            else:
                self._src = LabStats(self._ema(self._src.mean, s.mean), self._ema(self._src.std, s.std))
                self._ref = LabStats(self._ema(self._ref.mean, r.mean), self._ema(self._ref.std, r.std))
        if self._src is None or self._ref is None:
            return src.copy()
        return _reinhard_apply(lab_src, self._src, self._ref, self.max_gain)
