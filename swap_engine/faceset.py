"""Face sets: turn a person's photos and selfie videos into a folder of aligned, diverse, sharp face crops.

Contract:
- ``build_faceset(inputs, out_dir, detector, ...) -> FaceSetReport`` reads every input (photo or video, judged by
  content), finds the face, aligns it (``align.align_face`` at ``size``/``coverage``) and keeps a diverse subset.
  It writes ``out_dir/faces/NNNN.png`` (``size`` x ``size`` RGB crops, numbered from 0000) and
  ``out_dir/faceset.json`` (one record per crop: ``file``, ``source``, ``frame`` (None for photos), ``points``
  ``(478, 2)`` in crop pixels, ``yaw``/``pitch``/``roll`` degrees, ``blur``, ``size`` px in the source,
  ``blendshapes`` (52 floats, ``landmarks.BLENDSHAPE_NAMES`` order), ``mask``; plus ``size``, ``coverage``,
  rejections and notes). Each crop's mask, the face without hair (``segment.face_region``, with the hair
  segmenter when ``hair_model`` is given, else the landmark hull), is ``out_dir/faces/NNNN.mask.png`` (grey
  0-255). ``out_dir`` must be absent or empty; it appears complete or not at all.
- Photos: the EXIF orientation is honoured; with several faces the largest is kept and a note says so. Photos
  that pass the filters are always kept (except a byte-identical repeat).
- Videos: up to ``max_video_frames`` frames, evenly spaced, run through one VIDEO-mode detector (tracking). Their
  faces compete for the remaining places by greedy farthest-point sampling over head pose and expression
  (blendshapes), starting from what the photos already cover; a frame too close to a kept face is skipped as
  similar, and the set stops at ``max_faces``.
- Filters, each a rejection with its reason: no face, too small (``min_face_px``), blurry (variance of the
  Laplacian of the inner face below ``blur_threshold`` times the set's median: relative, so a soft phone camera
  is judged against itself), extreme pose (``max_yaw``/``max_pitch``), unreadable (corrupt, text, too large, no
  video stream...). Bad input never raises on its own: it is a rejection. ``NoFaceFound`` (listing each input's
  reasons) is raised only when nothing at all was kept.
- One person: with an ``embedder`` (``embed.FaceEmbedder``), the faces that passed the filters are checked with
  ``one_person.check_one_person`` before the selection; a photo of someone else than the majority person is
  rejected (``OTHER_PERSON``, "obama.jpg shows someone else — not the person in selfie_man.mp4"), a video's
  frames of someone else are dropped (a note says so when that is most of the video; a whole rejection when it is
  all of it). The person's reference embedding (``(128,)``, the centroid of the embedded faces) is
  ``report.reference`` and is stored in ``faceset.json`` (``reference``, ``reference_count``). With ``prior``
  (the reference of the person enrolled before and their face count) that person votes too; when none of the
  faces is the person the vote chose, ``OtherPerson`` (a ``NoFaceFound`` carrying the report) is raised.
- ``faceset_reference(dir, embedder) -> (reference, count)``: the stored one, or for a set without one (older
  formats, or built without an embedder) computed from a sample of its crops and written into its JSON.
- ``load_faceset(dir, hair_model=None) -> FaceSet``: ``crops`` ``(N, S, S, 3)`` uint8 RGB, ``points``
  ``(N, 478, 2)`` float32 crop pixels, ``masks`` ``(N, S, S)`` float32 in ``[0, 1]``, ``records`` in file order.
  Format versions: 1 had no masks, 2 stores one per crop, 3 adds the reference embedding (may be null). Faces
  without a stored mask (a version-1 set, or faces merged in from one) get theirs on load, from ``hair_model``
  when given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common.errors import MediaError, NoFaceFound
from swap_engine import align
from swap_engine.embed import FaceEmbedder
from swap_engine.landmarks import BLENDSHAPE_NAMES, Face, LandmarkDetector
from swap_engine.media import load_image, sniff_kind
from swap_engine.one_person import FaceToCheck, check_one_person, crop_embeddings

log = logging.getLogger("famswap.faceset")

FACESET_JSON = "faceset.json"
FACES_DIR = "faces"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
# A set without a stored reference gets one from at most this many of its crops (about 80 ms each on a CPU).
REFERENCE_SAMPLE = 16

DetectorFactory = Callable[[bool], LandmarkDetector]  # video -> a fresh detector
ProgressFn = Callable[[float, str], None]  # (fraction done, what is happening)

# Expressions that change how a face looks to the autoencoder (mouth, eyes, brows, gaze): the axes along
# which a face set should be diverse, beside head pose.
DIVERSITY_SHAPES = (
    "jawOpen", "mouthSmileLeft", "mouthSmileRight", "mouthPucker", "mouthFunnel", "mouthLeft", "mouthRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthRollLower", "cheekPuff", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeWideLeft", "eyeWideRight", "eyeSquintLeft", "eyeSquintRight", "browInnerUp", "browDownLeft",
    "browDownRight", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeLookDownLeft",
)  # fmt: skip
_SHAPE_INDEX = [BLENDSHAPE_NAMES.index(name) for name in DIVERSITY_SHAPES]
# Feature scale: 10 degrees of yaw or pitch, 20 of roll, or a blendshape moving by a third, count as one unit.
_POSE_UNIT = np.array([10.0, 10.0, 20.0])
_SHAPE_UNIT = 1.0 / 3.0

# Rejection reasons, as counted in the summary.
NO_FACE = "no face"
TOO_SMALL = "too small"
BLURRY = "blurry"
EXTREME_POSE = "extreme pose"
UNREADABLE = "unreadable"
DUPLICATE = "duplicate"
SIMILAR = "similar"  # a near-duplicate video frame: skipped, not a fault
SET_FULL = "set full"  # the set already holds max_faces
OTHER_PERSON = "someone else"  # not the person most of the enrollment's faces show
_SKIPPED = (SIMILAR, SET_FULL)


@dataclass(frozen=True, eq=False)
class FaceRecord:
    """One kept face: its crop file (relative to the face set folder) and what was measured on it."""

    file: str
    source: str
    frame: int | None
    points: np.ndarray  # (478, 2) float32, crop pixels
    yaw: float
    pitch: float
    roll: float
    blur: float  # variance of the Laplacian of the inner face (crop pixels, 0-255 grey)
    size: float  # face size in source pixels (landmarks.Face.size)
    blendshapes: np.ndarray | None  # (52,) float32
    mask: str | None = None  # the face-without-hair mask's file (relative to the folder); None: made on load

    def to_json(self) -> dict[str, object]:
        return {
            "mask": self.mask,
            "file": self.file,
            "source": self.source,
            "frame": self.frame,
            "yaw": round(self.yaw, 2),
            "pitch": round(self.pitch, 2),
            "roll": round(self.roll, 2),
            "blur": round(self.blur, 2),
            "size": round(self.size, 1),
            "points": np.round(self.points.astype(np.float64), 2).tolist(),
            "blendshapes": None if self.blendshapes is None else np.round(self.blendshapes, 4).tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> FaceRecord:
        shapes = data.get("blendshapes")
        return cls(
            file=str(data["file"]),
            source=str(data["source"]),
            frame=None if data.get("frame") is None else int(str(data["frame"])),
            points=np.asarray(data["points"], np.float32).reshape(-1, 2),
            yaw=float(data["yaw"]),  # type: ignore[arg-type]
            pitch=float(data["pitch"]),  # type: ignore[arg-type]
            roll=float(data["roll"]),  # type: ignore[arg-type]
            blur=float(data["blur"]),  # type: ignore[arg-type]
            size=float(data["size"]),  # type: ignore[arg-type]
            blendshapes=None if shapes is None else np.asarray(shapes, np.float32),
            mask=None if data.get("mask") is None else str(data["mask"]),
        )


@dataclass(frozen=True)
class Rejection:
    """A photo, a video, or one video frame that gave no face to the set, and why (``reason`` is one of the
    module's reason constants; ``detail`` is a sentence for the user)."""

    source: str
    frame: int | None
    reason: str
    detail: str


@dataclass
class FaceSetReport:
    """What ``build_faceset`` kept, rejected and noticed. ``summary()`` is the text to show the user."""

    out_dir: Path
    kept: list[FaceRecord]
    rejected: list[Rejection]
    notes: list[str] = field(default_factory=list)
    photos: int = 0  # inputs read as photos
    videos: int = 0  # inputs read as videos
    reference: np.ndarray | None = None  # (128,) float32 identity embedding of the person (with an embedder)
    reference_count: int = 0  # embeddings averaged into ``reference``

    @property
    def problems(self) -> list[Rejection]:
        """Rejections that point at a fault (not the similar frames skipped on purpose)."""
        return [r for r in self.rejected if r.reason not in _SKIPPED]

    def summary(self) -> str:
        """E.g. "62 faces kept from 1 video and 2 photos (118 similar frames skipped); 3 rejected: 2 blurry,
        1 no face; poses: mostly frontal (yaw -6° to 8°) — add a few shots with the head turned to each side"."""
        videos = len({r.source for r in self.kept if r.frame is not None})
        photos = len({r.source for r in self.kept if r.frame is None})
        parts = [_count(videos, "video"), _count(photos, "photo")]
        origin = " and ".join(p for p in parts if p) or "nothing"
        text = f"{_count(len(self.kept), 'face')} kept from {origin}"
        skipped = [r for r in self.rejected if r.reason in _SKIPPED]
        if skipped:
            text += f" ({_count(len(skipped), 'similar frame')} skipped)"
        problems = self.problems
        if problems:
            counts = Counter(r.reason for r in problems).most_common()
            text += f"; {len(problems)} rejected: " + ", ".join(f"{n} {reason}" for reason, n in counts)
        text += "; " + pose_advice(self.kept)
        if self.notes:
            text += ". " + " ".join(self.notes)
        return text


class OtherPerson(NoFaceFound):
    """Every face found shows someone else than the person enrolled before; ``report`` says which and why."""

    def __init__(self, message: str, *, report: FaceSetReport) -> None:
        super().__init__(message, hint="Send photos or a video of the person enrolled before.")
        self.report = report


@dataclass(frozen=True, eq=False)
class FaceSet:
    """A face set read back from disk (see ``load_faceset``)."""

    crops: np.ndarray  # (N, S, S, 3) uint8 RGB
    points: np.ndarray  # (N, 478, 2) float32, crop pixels
    masks: np.ndarray  # (N, S, S) float32 in [0, 1]: the face without hair
    records: list[FaceRecord]
    size: int
    coverage: float

    @property
    def pose_range(self) -> tuple[float, float, float, float]:
        """``(yaw_min, yaw_max, pitch_min, pitch_max)`` in degrees over the faces with a known pose."""
        return pose_range(self.records)

    def __len__(self) -> int:
        return len(self.records)


def _count(n: int, noun: str) -> str:
    if n == 0:
        return ""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def pose_range(records: Sequence[FaceRecord]) -> tuple[float, float, float, float]:
    """``(yaw_min, yaw_max, pitch_min, pitch_max)`` in degrees over ``records`` with a known pose (all 0 if none)."""
    yaw = np.array([r.yaw for r in records if math.isfinite(r.yaw)])
    pitch = np.array([r.pitch for r in records if math.isfinite(r.pitch)])
    if not len(yaw) or not len(pitch):
        return 0.0, 0.0, 0.0, 0.0
    return float(yaw.min()), float(yaw.max()), float(pitch.min()), float(pitch.max())


def pose_advice(kept: Sequence[FaceRecord]) -> str:
    """One clause on the head poses and expressions covered, with what to add when something is missing."""
    if not kept:
        return "poses: none"
    yaw = np.array([r.yaw for r in kept])
    pitch = np.array([r.pitch for r in kept])
    spread = f"yaw {yaw.min():.0f}° to {yaw.max():.0f}°, pitch {pitch.min():.0f}° to {pitch.max():.0f}°"
    wants = []
    if yaw.max() < 20 and yaw.min() > -20:
        wants.append("a few shots with the head turned to each side")
    elif yaw.max() < 20 or yaw.min() > -20:
        wants.append(f"a few shots turned to the {'right' if yaw.max() < 20 else 'left'} of the picture")
    if pitch.max() < 12 and pitch.min() > -12:
        wants.append("some looking up and down")
    shapes = np.array([r.blendshapes for r in kept if r.blendshapes is not None])
    if len(shapes) and shapes[:, BLENDSHAPE_NAMES.index("jawOpen")].max() < 0.3:
        wants.append("some talking or with the mouth open")
    frontal = "mostly frontal" if np.mean(np.abs(yaw) < 15) > 0.8 else "varied"
    text = f"poses: {frontal} ({spread})"
    if wants:
        text += " — add " + (wants[0] if len(wants) == 1 else ", ".join(wants[:-1]) + " and " + wants[-1])
    return text


@dataclass
class _Candidate:
    """A face found and aligned, waiting for the filters and the selection."""

    source: str
    frame: int | None
    face: Face
    aligned: align.AlignedFace
    blur: float

    def feature(self) -> np.ndarray:
        pose = np.array([self.face.yaw, self.face.pitch, self.face.roll]) / _POSE_UNIT
        pose = np.nan_to_num(pose)
        if self.face.blendshapes is None:
            return np.concatenate([pose, np.zeros(len(_SHAPE_INDEX))])
        return np.concatenate([pose, self.face.blendshapes[_SHAPE_INDEX] / _SHAPE_UNIT])


def build_faceset(
    inputs: Sequence[Path],
    out_dir: Path,
    detector: Path | DetectorFactory,
    *,
    size: int = 256,
    coverage: float = align.DEFAULT_COVERAGE,
    max_faces: int = 250,
    max_video_frames: int = 300,
    max_video_seconds: float | None = None,
    max_video_pixels: int | None = None,
    max_image_pixels: int = 40_000_000,
    min_face_px: float = 64.0,
    blur_threshold: float = 0.35,
    max_yaw: float = 70.0,
    max_pitch: float = 50.0,
    min_distance: float = 1.0,
    min_confidence: float = 0.8,
    hair_model: Path | None = None,
    embedder: FaceEmbedder | None = None,
    prior: tuple[np.ndarray, float] | None = None,
    on_progress: ProgressFn | None = None,
) -> FaceSetReport:
    """Build a face set in ``out_dir`` from photos and videos; see the module docstring.

    ``detector`` is the ``face_landmarker.task`` path (detectors are made with ``min_confidence``) or a factory
    ``video -> LandmarkDetector``. ``min_distance`` is how far apart, in feature units (10° of yaw or pitch, or a
    third of a blendshape's range), two video faces must be to both be kept. Raises ``NoFaceFound`` when no face
    is kept; ``FileExistsError`` when ``out_dir`` holds files. ``hair_model`` is ``hair_segmenter.tflite``: with it
    the stored masks leave out hair, without it they are the landmark hull. ``embedder``: keep only the faces of
    the person most faces show (see the module docstring); without it, no one-person check and no reference.
    ``prior`` ``(reference (128,), weight)``: the person enrolled before votes as ``weight`` faces; ``OtherPerson``
    when no face is the person chosen.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; a face set needs a fresh folder")
    make = _factory(detector, min_confidence)
    report = FaceSetReport(out_dir, [], [])
    photos: list[_Candidate] = []
    videos: list[_Candidate] = []
    seen_hashes: set[str] = set()
    total = max(len(inputs), 1)
    image_detector: LandmarkDetector | None = None
    try:
        for number, path in enumerate(inputs):
            path = Path(path)
            if on_progress:
                on_progress(number / total, f"reading {path.name}")
            kind = sniff_kind(path)
            if kind is None:
                report.rejected.append(_unreadable(path))
            elif kind == "image":
                report.photos += 1
                digest = _file_hash(path)
                if digest in seen_hashes:
                    report.rejected.append(
                        Rejection(path.name, None, DUPLICATE, f"{path.name} was sent twice.")
                    )
                    continue
                seen_hashes.add(digest)
                if image_detector is None:
                    image_detector = make(False)
                found = _photo_candidate(path, image_detector, size, coverage, max_image_pixels, report)
                if found is not None:
                    photos.append(found)
            else:
                report.videos += 1
                progress = _sub_progress(on_progress, number / total, 1 / total, path.name)
                with make(True) as video_detector:
                    videos.extend(
                        _video_candidates(
                            path, video_detector, size, coverage, max_video_frames, max_video_seconds,
                            max_video_pixels, report, progress,
                        )
                    )  # fmt: skip
    finally:
        if image_detector is not None:
            image_detector.close()

    candidates = _filter(photos + videos, report, min_face_px, blur_threshold, max_yaw, max_pitch)
    if embedder is not None and candidates:
        if on_progress:
            on_progress(0.95, "checking that the faces are one person")
        candidates = _one_person(candidates, report, embedder, prior)
        if not candidates:
            headline = "Every face shows someone else than the person enrolled before"
            raise OtherPerson(_no_face(inputs, report, headline).message, report=report)
    kept = _select(candidates, report, max_faces, min_distance)
    if not kept:
        raise _no_face(inputs, report)
    if on_progress:
        on_progress(0.97, f"finding hair and skin in {len(kept)} faces")
    masks = _masks([c.aligned for c in kept], hair_model)
    if on_progress:
        on_progress(0.99, f"writing {len(kept)} faces")
    _write(kept, masks, report, out_dir, size, coverage)
    return report


def _masks(faces: Sequence[align.AlignedFace], hair_model: Path | None) -> np.ndarray:
    """``(N, S, S)`` float32 face-without-hair masks of aligned faces (the hull alone without ``hair_model``)."""
    from swap_engine.segment import HairSegmenter, crop_masks

    if not faces:
        return np.empty((0, 0, 0), np.float32)
    crops = np.stack([f.crop for f in faces])
    points = np.stack([f.points for f in faces])
    if hair_model is None:
        return crop_masks(crops, points, None)
    with HairSegmenter(hair_model) as segmenter:
        return crop_masks(crops, points, segmenter)


def _factory(detector: Path | DetectorFactory, min_confidence: float) -> DetectorFactory:
    if callable(detector):
        return detector
    model = Path(detector)

    def make(video: bool) -> LandmarkDetector:
        # Two faces are enough to notice (and report) a second person; the largest is the one kept. Tiles help
        # photos (a big picture with a small face) but not selfie videos, where they would only slow down the
        # frames without a face.
        return LandmarkDetector(
            model,
            max_faces=2,
            video=video,
            min_confidence=min_confidence,
            tiles="never" if video else "empty",
        )

    return make


def _sub_progress(on_progress: ProgressFn | None, start: float, span: float, name: str) -> ProgressFn | None:
    if on_progress is None:
        return None
    return lambda fraction, what: on_progress(start + span * fraction, f"{name}: {what}")


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return f"unreadable:{path}"
    return digest.hexdigest()


def _unreadable(path: Path) -> Rejection:
    if not path.exists():
        detail = f"{path.name} does not exist."
    elif path.stat().st_size == 0:
        detail = f"{path.name} is empty."
    else:
        detail = f"{path.name} is neither a photo nor a video famswap can read."
    return Rejection(path.name, None, UNREADABLE, detail)


def _photo_candidate(
    path: Path, detector: LandmarkDetector, size: int, coverage: float, max_pixels: int, report: FaceSetReport
) -> _Candidate | None:
    try:
        image = load_image(path, max_pixels=max_pixels)
    except MediaError as exc:
        report.rejected.append(Rejection(path.name, None, UNREADABLE, exc.user_text()))
        return None
    faces = detector.detect(image)
    if not faces:
        report.rejected.append(Rejection(path.name, None, NO_FACE, f"No face found in {path.name}."))
        return None
    if len(faces) > 1:
        report.notes.append(f"{len(faces)} faces in {path.name}: used the largest.")
    return _candidate(path.name, None, image, faces[0], size, coverage)


def _video_candidates(
    path: Path,
    detector: LandmarkDetector,
    size: int,
    coverage: float,
    max_frames: int,
    max_seconds: float | None,
    max_pixels: int | None,
    report: FaceSetReport,
    on_progress: ProgressFn | None,
) -> list[_Candidate]:
    from swap_engine import video

    try:
        info = video.probe(path, max_seconds=max_seconds, max_pixels=max_pixels)
        frames = video.read_frames(path, info=info)
    except MediaError as exc:
        report.rejected.append(Rejection(path.name, None, UNREADABLE, exc.user_text()))
        return []
    step = max(1, math.ceil(info.frame_count / max(max_frames, 1)))
    found: list[_Candidate] = []
    others = 0
    try:
        for index, frame in _every(frames, step, max_frames):
            faces = detector.detect(frame, round(index * 1000 / float(info.fps)))
            if not faces:
                report.rejected.append(Rejection(path.name, index, NO_FACE, f"No face in frame {index}."))
                continue
            others += len(faces) > 1
            found.append(_candidate(path.name, index, frame, faces[0], size, coverage))
            if on_progress and len(found) % 20 == 0:
                on_progress(min(index / max(info.frame_count, 1), 1.0), f"{len(found)} faces")
    except MediaError as exc:
        # Damaged part-way: keep the faces from the frames that decoded, and say what happened.
        report.rejected.append(Rejection(path.name, None, UNREADABLE, exc.user_text()))
    if others:
        report.notes.append(
            f"Another face appears in {others} sampled frames of {path.name}: used the largest."
        )
    return found


def _every(frames: Iterator[np.ndarray], step: int, limit: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, frame)`` for every ``step``-th frame, at most ``limit`` of them; closes the reader after."""
    taken = 0
    try:
        for index, frame in enumerate(frames):
            if index % step:
                continue
            yield index, frame
            taken += 1
            if taken >= limit:
                break
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()  # stops ffmpeg when we leave early


def _candidate(
    source: str, frame: int | None, image: np.ndarray, face: Face, size: int, coverage: float
) -> _Candidate:
    aligned = align.align_face(image, face, size, coverage)
    return _Candidate(source, frame, face, aligned, sharpness(aligned.crop, aligned.points))


def sharpness(crop: np.ndarray, points: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop inside the face (brows to chin, a margin in from its edge)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    laplacian = cv2.Laplacian(grey, cv2.CV_32F, ksize=3)
    hull = align.face_mask(points, crop.shape[0], forehead=False, feather_px=0) > 0.5
    # Keep the face's outline (and the background step there) out of the measure.
    margin = max(3, crop.shape[0] // 64)
    inner = cv2.erode(hull.astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)).astype(bool)
    if not inner.any():
        return float(laplacian.var())
    return float(laplacian[inner].var())


def _filter(
    candidates: list[_Candidate],
    report: FaceSetReport,
    min_face_px: float,
    blur_threshold: float,
    max_yaw: float,
    max_pitch: float,
) -> list[_Candidate]:
    """The candidates that pass size, pose and sharpness; the others become rejections."""
    passed = []
    for c in candidates:
        where = c.source if c.frame is None else f"{c.source} frame {c.frame}"
        if c.face.size < min_face_px:
            detail = f"The face in {where} is {c.face.size:.0f} px; at least {min_face_px:.0f} px are needed."
            report.rejected.append(Rejection(c.source, c.frame, TOO_SMALL, detail))
        elif abs(c.face.yaw) > max_yaw or abs(c.face.pitch) > max_pitch:
            detail = (
                f"The face in {where} is turned too far (yaw {c.face.yaw:.0f}°, pitch {c.face.pitch:.0f}°)."
            )
            report.rejected.append(Rejection(c.source, c.frame, EXTREME_POSE, detail))
        else:
            passed.append(c)
    if not passed:
        return passed
    median = float(np.median([c.blur for c in passed]))
    sharp = []
    for c in passed:
        if c.blur < blur_threshold * median:
            where = c.source if c.frame is None else f"{c.source} frame {c.frame}"
            detail = f"The face in {where} is blurry ({c.blur:.0f} against a median of {median:.0f})."
            report.rejected.append(Rejection(c.source, c.frame, BLURRY, detail))
        else:
            sharp.append(c)
    return sharp


def _one_person(
    candidates: list[_Candidate],
    report: FaceSetReport,
    embedder: FaceEmbedder,
    prior: tuple[np.ndarray, float] | None,
) -> list[_Candidate]:
    """The candidates showing the majority person; the others become rejections (a photo: whole; a video: its
    frames, plus a note when most of it, or a whole rejection when all of it, is someone else)."""
    started = time.perf_counter()
    check = check_one_person(
        [FaceToCheck(c.aligned.crop, c.aligned.points, c.source, c.frame) for c in candidates], embedder,
        prior=prior,
    )
    report.reference, report.reference_count = check.reference, check.count
    log.info("one-person check: %d of %d faces embedded in %.2f s, %d are the majority person",
             int(check.embedded.sum()), len(candidates), time.perf_counter() - started, int(check.same.sum()))
    # Name the person by the inputs that show them most, so "someone else" says who the faces are compared with.
    shown = Counter(c.source for c, same in zip(candidates, check.same, strict=True) if same)
    names = [name for name, _ in shown.most_common(2)]
    person = " and ".join(names) + (" and others" if len(shown) > 2 else "")
    if check.prior_won:
        person = "the faces enrolled before"
    kept: list[_Candidate] = []
    others: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for c, same in zip(candidates, check.same, strict=True):
        total[c.source] += 1
        if same:
            kept.append(c)
        elif c.frame is None:
            detail = f"{c.source} shows someone else — not the person in {person}."
            report.rejected.append(Rejection(c.source, None, OTHER_PERSON, detail))
        else:
            others[c.source] += 1
            report.rejected.append(
                Rejection(c.source, c.frame, OTHER_PERSON, f"Frame {c.frame} of {c.source} shows someone else.")
            )
    for source, n in others.items():
        if n == total[source]:
            detail = f"{source} shows someone else — not the person in {person}."
            report.rejected.append(Rejection(source, None, OTHER_PERSON, detail))
        elif 2 * n > total[source]:
            report.notes.append(
                f"Most of {source} ({n} of {total[source]} faces) shows someone else than {person}: "
                f"only its {total[source] - n} faces of that person are used."
            )
        else:
            report.notes.append(f"{n} faces of {source} show someone else: left out.")
    return kept


def _select(
    candidates: list[_Candidate], report: FaceSetReport, max_faces: int, min_distance: float
) -> list[_Candidate]:
    """Photos first, then video faces by greedy farthest-point sampling until too similar or ``max_faces``."""
    photos = [c for c in candidates if c.frame is None][:max_faces]
    pool = [c for c in candidates if c.frame is not None]
    kept = list(photos)
    if not pool:
        return kept
    features = np.stack([c.feature() for c in pool])
    # Distance from each pool face to the nearest kept face (infinite while nothing is kept).
    nearest = np.full(len(pool), np.inf)
    for c in kept:
        nearest = np.minimum(nearest, np.linalg.norm(features - c.feature(), axis=1))
    taken = np.zeros(len(pool), bool)
    if not kept:
        # Start from the sharpest near-frontal face: a good anchor for the set.
        frontalness = np.linalg.norm(features[:, :2], axis=1)
        first = int(np.argmax([c.blur / (1.0 + f) for c, f in zip(pool, frontalness, strict=True)]))
        nearest = np.minimum(nearest, np.linalg.norm(features - features[first], axis=1))
        taken[first] = True
        kept.append(pool[first])
    while len(kept) < max_faces:
        distance = np.where(taken, -1.0, nearest)
        best = int(np.argmax(distance))
        if distance[best] < min_distance:
            break
        taken[best] = True
        kept.append(pool[best])
        nearest = np.minimum(nearest, np.linalg.norm(features - features[best], axis=1))
    full = len(kept) >= max_faces
    for i in np.flatnonzero(~taken):
        c = pool[i]
        if full and nearest[i] >= min_distance:
            report.rejected.append(
                Rejection(c.source, c.frame, SET_FULL, f"The set already has {max_faces} faces.")
            )
        else:
            report.rejected.append(
                Rejection(c.source, c.frame, SIMILAR, "Too similar to a face already kept.")
            )
    # Keep the set in input order: photos as given, then video frames in time order.
    order = {id(c): n for n, c in enumerate(candidates)}
    return sorted(kept, key=lambda c: order[id(c)])


def _no_face(
    inputs: Sequence[Path], report: FaceSetReport, headline: str = "No usable face was found"
) -> NoFaceFound:
    lines = []
    for path in inputs:
        name = Path(path).name
        mine = [r for r in report.rejected if r.source == name]
        whole = [r for r in mine if r.frame is None]
        if whole:
            lines.append(whole[0].detail)
        elif mine:
            counts = Counter(r.reason for r in mine).most_common()
            lines.append(
                f"{name}: of {len(mine)} frames looked at, "
                + ", ".join(f"{n} {why}" for why, n in counts)
                + "."
            )
    return NoFaceFound(
        f"{headline}:\n" + "\n".join(f"- {line}" for line in lines),
        hint="Send clear, well-lit photos or a short selfie video in which one face fills a good part of the picture.",
    )


def _write(
    kept: list[_Candidate], masks: np.ndarray, report: FaceSetReport, out_dir: Path, size: int, coverage: float
) -> None:
    """Write crops and JSON into a temporary sibling folder, then move it into place in one rename."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (temp / FACES_DIR).mkdir()
        for number, c in enumerate(kept):
            name = f"{FACES_DIR}/{number:04d}.png"
            bgr = cv2.cvtColor(c.aligned.crop, cv2.COLOR_RGB2BGR)
            if not cv2.imwrite(str(temp / name), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
                raise OSError(f"could not write {temp / name}")
            mask_name = write_mask(temp, name, masks[number])
            report.kept.append(
                FaceRecord(
                    file=name,
                    source=c.source,
                    frame=c.frame,
                    points=c.aligned.points,
                    yaw=c.face.yaw,
                    pitch=c.face.pitch,
                    roll=c.face.roll,
                    blur=c.blur,
                    size=c.face.size,
                    blendshapes=c.face.blendshapes,
                    mask=mask_name,
                )
            )
        document = {
            "version": FORMAT_VERSION,
            "size": size,
            "coverage": coverage,
            "template": list(align.TEMPLATE_INDICES),
            "blendshape_names": list(BLENDSHAPE_NAMES),
            "summary": report.summary(),
            "faces": [r.to_json() for r in report.kept],
            "rejected": [vars(r) for r in report.rejected],
            "notes": report.notes,
            "reference": None if report.reference is None else np.round(report.reference, 6).tolist(),
            "reference_count": report.reference_count,
        }
        (temp / FACESET_JSON).write_text(json.dumps(document), encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked at the start): rename cannot replace a folder that has files
        os.replace(temp, out_dir)
    except BaseException:
        report.kept.clear()
        shutil.rmtree(temp, ignore_errors=True)
        raise


def mask_file(crop_file: str) -> str:
    """The mask's file name beside a crop's: ``faces/0001.png`` → ``faces/0001.mask.png``."""
    return crop_file[: -len(".png")] + ".mask.png" if crop_file.endswith(".png") else crop_file + ".mask.png"


def write_mask(folder: Path, crop_file: str, mask: np.ndarray) -> str:
    """Store ``mask`` ``(S, S)`` float32 as an 8-bit PNG beside ``crop_file``; returns its relative name."""
    name = mask_file(crop_file)
    grey = np.clip(np.rint(np.asarray(mask, np.float32) * 255), 0, 255).astype(np.uint8)
    if not cv2.imwrite(str(folder / name), grey, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"could not write {folder / name}")
    return name


def load_faceset(folder: Path, *, hair_model: Path | None = None) -> FaceSet:
    """Read a face set written by ``build_faceset`` (any readable version). Faces without a stored mask get one
    (hair-aware with ``hair_model``). ``FileNotFoundError``/``ValueError`` when it is damaged."""
    folder = Path(folder)
    document = json.loads((folder / FACESET_JSON).read_text(encoding="utf-8"))
    if document.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"{folder / FACESET_JSON} has version {document.get('version')}, expected one of {READABLE_VERSIONS}"
        )
    size = int(document["size"])
    records = [FaceRecord.from_json(face) for face in document["faces"]]
    crops = np.empty((len(records), size, size, 3), np.uint8)
    masks = np.empty((len(records), size, size), np.float32)
    missing = []
    for i, record in enumerate(records):
        bgr = cv2.imread(str(folder / record.file), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape != (size, size, 3):
            raise ValueError(f"{folder / record.file} is missing or not a {size} px crop")
        crops[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if record.mask is None:
            missing.append(i)
            continue
        grey = cv2.imread(str(folder / record.mask), cv2.IMREAD_GRAYSCALE)
        if grey is None or grey.shape != (size, size):
            raise ValueError(f"{folder / record.mask} is missing or not a {size} px mask")
        masks[i] = grey.astype(np.float32) / 255.0
    points = np.stack([r.points for r in records]) if records else np.empty((0, 478, 2), np.float32)
    if missing:
        from swap_engine.segment import HairSegmenter, crop_masks

        if hair_model is None:
            masks[missing] = crop_masks(crops[missing], points[missing], None)
        else:
            with HairSegmenter(hair_model) as segmenter:
                masks[missing] = crop_masks(crops[missing], points[missing], segmenter)
    return FaceSet(crops, points.astype(np.float32), masks, records, size, float(document["coverage"]))


def faceset_reference(folder: Path, embedder: FaceEmbedder) -> tuple[np.ndarray, int]:
    """The set's person as ``((128,) float32 reference, embeddings averaged)``: the one stored in its JSON, or, for a
    set without one, the centroid of the majority of up to ``REFERENCE_SAMPLE`` evenly spaced crops, then stored."""
    from swap_engine.embed import majority

    folder = Path(folder)
    path = folder / FACESET_JSON
    document = json.loads(path.read_text(encoding="utf-8"))
    if document.get("reference") is not None:
        return np.asarray(document["reference"], np.float32), int(document.get("reference_count") or 1)
    records = [FaceRecord.from_json(face) for face in document["faces"]]
    if not records:
        raise ValueError(f"{path} has no faces to take a reference from")
    picks = np.unique(np.linspace(0, len(records) - 1, min(len(records), REFERENCE_SAMPLE)).round().astype(int))
    crops = []
    for i in picks:
        bgr = cv2.imread(str(folder / records[i].file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{folder / records[i].file} is missing or unreadable")
        crops.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    vectors = crop_embeddings(crops, [records[i].points for i in picks], embedder)
    person = vectors[majority(vectors)]
    reference, count = person.mean(0).astype(np.float32), len(person)
    document["reference"], document["reference_count"] = np.round(reference, 6).tolist(), count
    path.write_text(json.dumps(document), encoding="utf-8")
    log.info("computed the reference of %s from %d of its %d faces", folder.name, len(picks), len(records))
    return reference, count


# -----------------------------------------------------------------------------
# archives (storage keeps a face set as one file) and thumbnails


def pack_faceset(folder: Path, archive: Path) -> Path:
    """An uncompressed tar of a face-set folder (the crops are PNGs already)."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(folder)))
    return archive


def unpack_faceset(archive: Path, folder: Path) -> Path:
    """Unpack a face-set tar made by ``pack_faceset``, refusing any member that would land outside ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    with tarfile.open(archive, "r") as tar:
        for member in tar.getmembers():
            target = (folder / member.name).resolve()
            if not member.isfile() or root not in target.parents:
                raise ValueError(f"unexpected entry {member.name!r} in a face-set archive")
            source = tar.extractfile(member)
            assert source is not None
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
    return folder



def merge_facesets(new: Path, earlier: Path) -> int:
    """Append the faces of an earlier face set (same crop size and coverage) to ``new``; returns the total. The
    merged reference is the two references averaged by their counts (a side without one leaves the other's)."""
    doc = json.loads((new / FACESET_JSON).read_text(encoding="utf-8"))
    old = json.loads((earlier / FACESET_JSON).read_text(encoding="utf-8"))
    if doc.get("reference") is not None and old.get("reference") is not None:
        a, b = int(doc.get("reference_count") or 1), int(old.get("reference_count") or 1)
        mixed = (a * np.asarray(doc["reference"]) + b * np.asarray(old["reference"])) / (a + b)
        doc["reference"], doc["reference_count"] = np.round(mixed, 6).tolist(), a + b
    elif doc.get("reference") is None and old.get("reference") is not None:
        doc["reference"], doc["reference_count"] = old["reference"], old.get("reference_count")
    if (old.get("size"), old.get("coverage")) != (doc.get("size"), doc.get("coverage")):
        log.warning("an earlier face set has another crop size or coverage; starting afresh")
        return len(doc["faces"])
    faces = doc["faces"]
    for record in old["faces"]:
        name = f"faces/{len(faces):04d}.png"
        shutil.copyfile(earlier / record["file"], new / name)
        mask = record.get("mask")  # version-1 sets have none: load_faceset makes it
        if mask:
            shutil.copyfile(earlier / mask, new / mask_file(name))
        faces.append({**record, "file": name, "mask": mask_file(name) if mask else None})
    (new / FACESET_JSON).write_text(json.dumps(doc), encoding="utf-8")
    return len(faces)


def thumbnail_grid(folder: Path, columns: int = 6, cell: int = 96, limit: int = 24) -> bytes:
    fs = load_faceset(folder)
    picks = np.linspace(0, len(fs) - 1, min(limit, len(fs))).round().astype(int)
    tiles = [cv2.resize(fs.crops[i], (cell, cell), interpolation=cv2.INTER_AREA) for i in picks]
    rows = (len(tiles) + columns - 1) // columns
    grid = np.full((rows * cell, min(columns, len(tiles)) * cell, 3), 20, np.uint8)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, columns)
        grid[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = tile
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise RuntimeError("OpenCV could not encode a thumbnail grid")
    return data.tobytes()
