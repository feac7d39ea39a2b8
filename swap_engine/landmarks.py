"""Face landmarks: MediaPipe Face Landmarker (478 points, 52 blendshapes, head pose) behind a small numpy API.

Contract:
- Input frames are ``(H, W, 3)`` ``uint8`` RGB arrays.
- ``Face.points`` is ``(478, 2)`` float32 ``(x, y)`` pixel coordinates in that frame (MediaPipe face-mesh order);
  ``Face.depth`` ``(478,)`` float32 relative depth in the same pixel scale (smaller = nearer the camera, about 0
  at the face's centre); ``Face.box`` ``(x0, y0, x1, y1)`` is the points' bounding box in pixels;
  ``Face.blendshapes`` ``(52,)`` float32 scores in ``[0, 1]`` in ``BLENDSHAPE_NAMES`` order, or None;
  ``Face.pose`` the ``(4, 4)`` float32 facial transformation matrix (canonical face model → camera space,
  centimetres), or None.
- ``yaw``/``pitch``/``roll`` are degrees from ``pose``, as seen in the image: ``yaw > 0`` the nose points to the
  image's right, ``pitch > 0`` the face tilts up (chin up), ``roll > 0`` the head leans counter-clockwise (the
  eye line rises to the right). A frontal face is about 0, 0, 0. They are NaN when ``pose`` is None.
- ``Face.size`` is the face's side length in pixels: ``sqrt(width * height)`` of ``box`` (brow to chin by cheek to
  cheek; stable across expressions and only mildly smaller in profile).
- ``LandmarkDetector.detect(rgb, timestamp_ms)`` returns faces sorted largest first, at most ``max_faces``. In
  video mode timestamps must strictly increase (MediaPipe then tracks faces between frames instead of
  re-detecting); leave ``timestamp_ms`` out to step one frame at 30 fps.

Small faces: MediaPipe's face detector looks at the frame shrunk to 128 x 128 px, so faces under about a tenth
of the frame are missed. When ``tiles`` allows (default: when the whole frame gave nothing), the frame is cut into
overlapping square tiles half its short side wide; the detector then sees each tile at 128 px, i.e. the faces
twice as large. Points found in a tile are mapped back to frame pixels; faces cut by a tile edge are left to the
neighbouring tile, and faces found twice are kept once. That pass uses its own IMAGE-mode landmarker so the video
landmarker's timestamps and tracking are not disturbed.

MediaPipe is imported only when a detector is created, so this module imports without it. Its C++ start-up lines
(``W0000 … face_landmarker_graph.cc …``), printed while a landmarker is created and runs for the first time, are
kept off stderr (``native_log.quiet_native_stderr``); its errors still reach it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np

from swap_engine.native_log import quiet_native_stderr

NUM_POINTS = 478
TileMode = Literal["never", "empty", "always"]

# MediaPipe's blendshape categories, in the order of its output (read from the model's results).
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)  # fmt: skip

# Face-mesh regions (indices into the 478 points). "Left"/"right" are the person's: the right eye is on the image's
# left in an unmirrored photo.
# The face oval is a closed loop, clockwise (as seen in the image) from the top of the forehead.
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398)
RIGHT_BROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
LEFT_BROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
# The mouth opening (inner edge of the lips), a closed loop from the left corner along the lower lip.
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)

# A tile's faces that come within this many pixels of an inner tile edge are probably cut off there.
_EDGE_PX = 2.0
# Two faces whose boxes overlap more than this (intersection over union) are the same face.
_SAME_FACE_IOU = 0.4
# Frames whose short side is below this are not worth tiling: the detector already sees them near full size.
_MIN_TILE_SOURCE_PX = 192
_FRAME_MS = 1000.0 / 30.0


@dataclass(frozen=True, eq=False)
class Face:
    """One face in one image. See the module docstring for shapes, units and sign conventions."""

    points: np.ndarray  # (478, 2) float32, pixels
    depth: np.ndarray | None  # (478,) float32, pixels
    blendshapes: np.ndarray | None  # (52,) float32 in [0, 1]
    pose: np.ndarray | None  # (4, 4) float32

    @cached_property
    def box(self) -> tuple[float, float, float, float]:
        x0, y0 = self.points.min(axis=0)
        x1, y1 = self.points.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)

    @cached_property
    def size(self) -> float:
        x0, y0, x1, y1 = self.box
        return math.sqrt(max(x1 - x0, 0.0) * max(y1 - y0, 0.0))

    @property
    def yaw(self) -> float:
        if self.pose is None:
            return math.nan
        r = self.pose
        # The face's forward axis in camera space (x right, y up, z toward the viewer) is the third column.
        return math.degrees(math.atan2(float(r[0, 2]), float(r[2, 2])))

    @property
    def pitch(self) -> float:
        if self.pose is None:
            return math.nan
        return math.degrees(math.asin(max(-1.0, min(1.0, float(self.pose[1, 2])))))

    @property
    def roll(self) -> float:
        if self.pose is None:
            return math.nan
        # The face's left-to-right axis (first column) seen in the camera's x-y plane.
        return math.degrees(math.atan2(float(self.pose[1, 0]), float(self.pose[0, 0])))

    def blendshape(self, name: str) -> float:
        """One blendshape score by its MediaPipe name (``"jawOpen"``, ``"eyeBlinkLeft"`` …); 0 when absent."""
        if self.blendshapes is None:
            return 0.0
        return float(self.blendshapes[BLENDSHAPE_NAMES.index(name)])

    def shifted(self, dx: float, dy: float) -> Face:
        """This face with its points moved by ``(dx, dy)``: from a crop's pixels to the full image's."""
        return Face(self.points + np.array([dx, dy], np.float32), self.depth, self.blendshapes, self.pose)


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def tile_grid(width: int, height: int) -> list[tuple[int, int, int]]:
    """Overlapping square tiles ``(x0, y0, side)`` covering a frame; side = half the short side, 1/3 overlap."""
    side = min(width, height) // 2
    step = max(1, (2 * side) // 3)

    def starts(length: int) -> list[int]:
        values = list(range(0, length - side, step))
        values.append(length - side)
        return sorted(set(values))

    return [(x, y, side) for y in starts(height) for x in starts(width)]


class LandmarkDetector:
    """MediaPipe Face Landmarker for photos (``video=False``) or the frames of one clip in order (``video=True``).

    ``min_confidence`` is the face detector's threshold (also used for presence and tracking). Real faces in the
    project's media score 0.86-0.96; a frontal dog scores 0.72, so 0.8 suits enrollment where a wrong face is
    worse than a missed one, and the default 0.5 suits movie clips. ``tiles``: when to retry on tiles for small
    faces (``"never"``, ``"empty"`` = only when the whole frame gave no face, ``"always"``). Use it as a context
    manager or call ``close()``: MediaPipe holds native resources.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        max_faces: int = 4,
        video: bool = False,
        min_confidence: float = 0.5,
        tiles: TileMode = "empty",
        blendshapes: bool = True,
    ) -> None:
        if max_faces < 1:
            raise ValueError("max_faces must be at least 1")
        if tiles not in ("never", "empty", "always"):
            raise ValueError(f"tiles must be never, empty or always, not {tiles!r}")
        self.model_path = Path(model_path)
        self.max_faces = max_faces
        self.video = video
        self.min_confidence = min_confidence
        self.tiles = tiles
        self.blendshapes = blendshapes
        self._last_ms: int | None = None
        self._tile_landmarker: Any = None
        self._started: list[Any] = []  # landmarkers that have run once (their graphs have finished starting up)
        self._landmarker: Any = self._create(video=video, num_faces=max_faces)

    def _create(self, *, video: bool, num_faces: int) -> Any:
        import mediapipe  # noqa: F401 - imported here so the engine imports without it
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
            num_faces=num_faces,
            min_face_detection_confidence=self.min_confidence,
            min_face_presence_confidence=self.min_confidence,
            min_tracking_confidence=self.min_confidence,
            output_face_blendshapes=self.blendshapes,
            output_facial_transformation_matrixes=True,
        )
        with quiet_native_stderr():
            return vision.FaceLandmarker.create_from_options(options)

    def __enter__(self) -> LandmarkDetector:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release MediaPipe's graphs; the detector cannot be used afterwards. Safe to call twice."""
        for name in ("_landmarker", "_tile_landmarker"):
            landmarker = getattr(self, name)
            if landmarker is not None:
                landmarker.close()
                setattr(self, name, None)
        self._started.clear()

    def detect(self, rgb: np.ndarray, timestamp_ms: int | None = None) -> list[Face]:
        """Faces in ``rgb`` (``(H, W, 3)`` uint8 RGB), largest first, at most ``max_faces``.

        ``timestamp_ms`` is used in video mode only and must increase from call to call.
        """
        if self._landmarker is None:
            raise RuntimeError("this LandmarkDetector is closed")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        rgb = np.ascontiguousarray(rgb)
        faces = self._run(self._landmarker, rgb, self._next_timestamp(timestamp_ms))
        if self.tiles == "always" or (self.tiles == "empty" and not faces):
            faces += self._tile_faces(rgb)
        return _distinct(faces)[: self.max_faces]

    def _next_timestamp(self, timestamp_ms: int | None) -> int | None:
        if not self.video:
            return None
        if timestamp_ms is None:
            timestamp_ms = 0 if self._last_ms is None else self._last_ms + round(_FRAME_MS)
        timestamp_ms = int(timestamp_ms)
        if self._last_ms is not None and timestamp_ms <= self._last_ms:
            raise ValueError(
                f"video timestamps must increase: got {timestamp_ms} ms after {self._last_ms} ms "
                "(use a new LandmarkDetector for each clip)"
            )
        self._last_ms = timestamp_ms
        return timestamp_ms

    def _run(self, landmarker: Any, rgb: np.ndarray, timestamp_ms: int | None) -> list[Face]:
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        # The first run still starts parts of the graph (TFLite delegates), which print their own lines.
        first = not any(landmarker is started for started in self._started)
        with quiet_native_stderr() if first else contextlib.nullcontext():
            if timestamp_ms is None:
                result = landmarker.detect(image)
            else:
                result = landmarker.detect_for_video(image, timestamp_ms)
        if first:
            self._started.append(landmarker)
        height, width = rgb.shape[:2]
        faces = []
        for i, marks in enumerate(result.face_landmarks):
            xyz = np.array([(m.x, m.y, m.z) for m in marks], dtype=np.float32)
            points = xyz[:, :2] * np.array([width, height], np.float32)
            depth = xyz[:, 2] * np.float32(width)  # MediaPipe scales z like x
            shapes = None
            if result.face_blendshapes:
                shapes = np.zeros(len(BLENDSHAPE_NAMES), np.float32)
                for category in result.face_blendshapes[i]:
                    shapes[category.index] = category.score
            pose = None
            if result.facial_transformation_matrixes:
                pose = np.asarray(result.facial_transformation_matrixes[i], dtype=np.float32).reshape(4, 4)
            faces.append(Face(points, depth, shapes, pose))
        return faces

    def _tile_faces(self, rgb: np.ndarray) -> list[Face]:
        """Faces found on overlapping tiles of ``rgb``, in its pixels (duplicates across tiles included)."""
        height, width = rgb.shape[:2]
        if min(height, width) < _MIN_TILE_SOURCE_PX:
            return []
        if self._tile_landmarker is None:
            self._tile_landmarker = self._create(video=False, num_faces=self.max_faces)
        found: list[Face] = []
        for x0, y0, side in tile_grid(width, height):
            tile = np.ascontiguousarray(rgb[y0 : y0 + side, x0 : x0 + side])
            for face in self._run(self._tile_landmarker, tile, None):
                if not _cut_by_tile_edge(face.box, x0, y0, side, width, height):
                    found.append(face.shifted(x0, y0))
        return found


def _distinct(faces: list[Face]) -> list[Face]:
    """Largest first, without faces that overlap a larger one: the same face found twice.

    MediaPipe's VIDEO mode with ``num_faces > 1`` returns, now and then, a tracked face and a fresh detection of
    the same face (boxes overlapping by 90 %); tiles find a face again in each tile that holds it whole.
    """
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: f.size, reverse=True):
        if all(box_iou(face.box, other.box) < _SAME_FACE_IOU for other in kept):
            kept.append(face)
    return kept


def _cut_by_tile_edge(
    box: tuple[float, float, float, float], x0: int, y0: int, side: int, width: int, height: int
) -> bool:
    """True when a face box (tile pixels) reaches a tile edge that is not also the frame's edge."""
    bx0, by0, bx1, by1 = box
    return (
        (x0 > 0 and bx0 < _EDGE_PX)
        or (y0 > 0 and by0 < _EDGE_PX)
        or (x0 + side < width and bx1 > side - _EDGE_PX)
        or (y0 + side < height and by1 > side - _EDGE_PX)
    )
