"""Hair-aware face masks: MediaPipe's Hair Segmenter behind a numpy API, and the mask of a face's own skin in a crop.

Contract:
- Images are ``(H, W, 3)`` uint8 RGB; masks ``(H, W)`` float32 in ``[0, 1]``; points the 478 MediaPipe landmarks
  ``(478, 2)`` in the same image's pixels.
- ``HairSegmenter(model_path).hair(rgb)`` is the probability that each pixel is hair (the model sees the image at
  512 x 512; about 40 ms a call on one CPU core). A context manager; ``close()`` frees MediaPipe's graph.
- ``face_region(points, size, hair)`` is the face without hair: the landmark hull raised over the forehead
  (``align.face_mask``), minus every pixel the segmenter calls hair (grown a little, since strands are finer than
  the model sees), with the inner face (eyes, nose, mouth) always kept, so a dark eyebrow or a beard shadow taken
  for hair never punches a hole in the eyes or lips. ``hair=None`` gives the plain hull (no segmenter at hand).
  The edge is softened inward by ``feather_px`` (default 2 % of ``size``): 0 on and outside the face.
- ``crop_masks(crops, points, segmenter)`` is ``face_region`` for a stack of aligned crops ``(N, S, S, 3)``.

What covers a face other than hair (hands, a microphone, glasses frames) is not detected: the landmarker draws the
face through them. MediaPipe is imported only when a ``HairSegmenter`` is made, so this module imports without it; its C++ start-up
lines are kept off stderr (``native_log.quiet_native_stderr``).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from swap_engine.align import face_mask, feather_inward
from swap_engine.landmarks import LEFT_BROW, LEFT_EYE, LIPS_OUTER, RIGHT_BROW, RIGHT_EYE
from swap_engine.native_log import quiet_native_stderr

# Nose from bridge to tip and its wings: with the eyes and lips, the part of a face that is never hair.
_NOSE = (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 327, 64, 294, 129, 358)
# Hair probability mapped to "hair" with a soft ramp: the model is confident on real hair (> 0.9) and leaves
# skin near 0, with a faint haze (0.1-0.3) over brows and glasses that must not count.
_HAIR_LOW, _HAIR_HIGH = 0.35, 0.65
_HAIR_GROW = 0.015  # of the crop side: fine strands and the halo the 512 px model blurs away
_CORE_GROW = 0.02  # of the crop side: the inner face kept whatever the segmenter says


class HairSegmenter:
    """MediaPipe Image Segmenter running ``hair_segmenter.tflite`` (classes background, hair) in IMAGE mode."""

    def __init__(self, model_path: Path) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.ImageSegmenterOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.IMAGE,
            output_confidence_masks=True,
            output_category_mask=False,
        )
        with quiet_native_stderr():
            self._segmenter: Any = vision.ImageSegmenter.create_from_options(options)
        self._started = False  # the first segment() still starts TFLite's delegate, which prints its own lines

    def hair(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W)`` float32 in ``[0, 1]``: how likely each pixel of ``rgb`` ``(H, W, 3)`` uint8 is hair."""
        import mediapipe as mp

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"hair() takes (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if self._started:
            result = self._segmenter.segment(image)
        else:
            with quiet_native_stderr():
                result = self._segmenter.segment(image)
            self._started = True
        hair = np.array(result.confidence_masks[1].numpy_view(), np.float32).reshape(rgb.shape[:2])
        return np.clip(hair, 0.0, 1.0)

    def close(self) -> None:
        if self._segmenter is not None:
            self._segmenter.close()
            self._segmenter = None

    def __enter__(self) -> HairSegmenter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def hair_weight(hair: np.ndarray, size: int) -> np.ndarray:
    """``(S, S)`` float32: 1 on hair (probability ramped over 0.35-0.65), grown by 1.5 % of ``size``."""
    ramp = np.clip((np.asarray(hair, np.float32) - _HAIR_LOW) / (_HAIR_HIGH - _HAIR_LOW), 0.0, 1.0)
    radius = max(1, round(size * _HAIR_GROW))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(ramp, kernel)


def part_hulls(points: np.ndarray, size: int, parts: tuple[tuple[int, ...], ...], grow: float) -> np.ndarray:
    """``(S, S)`` float32 in {0, 1}: the convex hull of each group of landmark indices in ``parts``, grown by
    ``grow`` of ``size`` (at least one pixel)."""
    out = np.zeros((size, size), np.uint8)
    pts = np.asarray(points, np.float64)
    for part in parts:
        hull = cv2.convexHull(np.round(pts[list(part)] * 16).astype(np.int32))
        cv2.fillConvexPoly(out, hull, 1, lineType=cv2.LINE_8, shift=4)
    radius = max(1, round(size * grow))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(out, kernel).astype(np.float32)


def inner_face(points: np.ndarray, size: int) -> np.ndarray:
    """``(S, S)`` float32 in {0, 1}: the convex hulls of the eyes, the nose and the lips, grown by 2 % of ``size``."""
    return part_hulls(points, size, (RIGHT_EYE, LEFT_EYE, _NOSE, LIPS_OUTER), _CORE_GROW)


# Groups of landmarks for ``skin_weight``: where a face's identity lives.
FEATURES = {"eyes": (RIGHT_EYE + RIGHT_BROW, LEFT_EYE + LEFT_BROW), "nose": (_NOSE,), "lips": (LIPS_OUTER,)}


def skin_weight(points: np.ndarray, size: int, features: tuple[str, ...] = ("eyes", "nose", "lips")) -> np.ndarray:
    """``(S, S)`` float32 in ``[0, 1]``: 0 over the ``features`` (``FEATURES`` keys: eyes with their brows, nose,
    lips; grown by 4 % of ``size`` and softened), 1 elsewhere: where a face is skin."""
    parts = tuple(part for name in features for part in FEATURES[name])
    if not parts:
        return np.ones((size, size), np.float32)
    hulls = part_hulls(points, size, parts, 0.04)
    return 1.0 - cv2.GaussianBlur(hulls, (0, 0), max(1, round(size * 0.04)) / 2)


def face_region(
    points: np.ndarray, size: int, hair: np.ndarray | None, *, feather_px: float | None = None
) -> np.ndarray:
    """The face's own skin in a ``size`` crop: the raised landmark hull minus hair, inner face kept; see the module
    docstring. ``hair`` is ``HairSegmenter.hair`` of the same crop, or None."""
    hull = face_mask(points, size, forehead=True, feather_px=0)
    core = None
    if hair is not None:
        if hair.shape != (size, size):
            raise ValueError(f"hair mask {hair.shape} does not match the {size} px crop")
        hull = hull * (1.0 - hair_weight(hair, size))
        core = inner_face(points, size)
    feather = size * 0.02 if feather_px is None else float(feather_px)
    hull = feather_inward(hull, feather)
    if feather > 0 and core is not None:
        core = cv2.GaussianBlur(core, (0, 0), sigmaX=feather / 2)
    if core is not None:
        # The inner face stays whatever the segmenter said (softened, not eroded: it is grown to allow for that).
        hull = np.maximum(hull, core)
    region: np.ndarray = np.clip(hull, 0.0, 1.0).astype(np.float32)
    return region


def crop_masks(crops: np.ndarray, points: np.ndarray, segmenter: HairSegmenter | None) -> np.ndarray:
    """``(N, S, S)`` float32 face-without-hair masks of aligned crops ``(N, S, S, 3)`` with points ``(N, 478, 2)``."""
    crops = np.asarray(crops)
    size = crops.shape[1]
    out = np.empty(crops.shape[:3], np.float32)
    for n, (crop, pts) in enumerate(zip(crops, points, strict=True)):
        out[n] = face_region(pts, size, None if segmenter is None else segmenter.hair(crop))
    return out
