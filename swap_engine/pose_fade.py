"""Pose-aware blending: how much of the swap to show when the actor turns further than the enrolled faces do.

Contract: angles in degrees (``landmarks.Face`` conventions). ``PoseRange(yaw_min, yaw_max, pitch_min,
pitch_max)`` is what a face set covers; with ``mirrored`` (training flips faces, see ``augment.AugmentConfig.flip``)
a yaw covered on one side counts for the other too. ``PoseRange.weight(yaw, pitch)`` is in ``[0, 1]``: 1 inside the
range and up to ``start`` degrees past it (the model extrapolates a little), falling smoothly to 0 at ``end``
degrees past it. ``FadeFilter`` limits how fast the weight may change from one frame to the next, so a swap never
pops in or out; ``reset()`` at a cut lets it jump.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Degrees past the covered range where the fade starts and where the swap is gone.
FADE_START = 10.0
FADE_END = 30.0
# Largest change of the weight per frame: a full fade takes a third of a second at 30 fps.
MAX_STEP = 0.1
# Frames whose weight is below this count as faded in reports.
FADED_BELOW = 0.99

ADVICE = "for turned heads, enroll a video turning your head left and right"


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class PoseRange:
    """The head poses a face set covers, in degrees."""

    yaw_min: float
    yaw_max: float
    pitch_min: float
    pitch_max: float
    mirrored: bool = True
    start: float = FADE_START
    end: float = FADE_END

    def beyond(self, yaw: float, pitch: float) -> float:
        """How many degrees (the larger of yaw and pitch) the pose lies outside the range; 0 inside it."""
        if math.isnan(yaw) or math.isnan(pitch):
            return 0.0  # unknown pose: do not fade on a guess
        lo, hi = self.yaw_min, self.yaw_max
        if self.mirrored:
            reach = max(abs(lo), abs(hi))
            lo, hi = -reach, reach
        yaw_out = max(lo - yaw, yaw - hi, 0.0)
        pitch_out = max(self.pitch_min - pitch, pitch - self.pitch_max, 0.0)
        return max(yaw_out, pitch_out)

    def weight(self, yaw: float, pitch: float) -> float:
        """1 inside the range (and ``start`` degrees past it), 0 from ``end`` degrees past it, smooth between."""
        past = self.beyond(yaw, pitch)
        return 1.0 - _smoothstep((past - self.start) / max(self.end - self.start, 1e-6))


class FadeFilter:
    """Rate-limits a per-frame weight so it changes by at most ``max_step`` a frame."""

    def __init__(self, max_step: float = MAX_STEP) -> None:
        self.max_step = max_step
        self.value: float | None = None

    def reset(self) -> None:
        self.value = None

    def __call__(self, target: float) -> float:
        if self.value is None:
            self.value = target
        else:
            self.value += max(-self.max_step, min(self.max_step, target - self.value))
        return self.value
