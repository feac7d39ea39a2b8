"""Face tracks through a clip: link per-frame faces by box overlap, rank them, and draw a numbered contact sheet.

Input: per-frame lists of `landmarks.Face` (pixel coordinates of the frame). Output: `Track` records, sorted so that
track 0 is the main actor (most screen time × face size). Pure functions apart from `scan_clip`, which decodes the
clip and runs the landmark detector once over every frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from swap_engine.landmarks import Face

# A face that moves less than this IoU between consecutive frames is the same person.
_MIN_IOU = 0.25
# A track may skip this many frames (detector misses, blinks behind a hand) and still continue.
_MAX_GAP = 8


@dataclass
class Track:
    """One person's face through the clip: frame index → Face (frame pixel coordinates)."""

    index: int
    faces: dict[int, Face] = field(default_factory=dict)

    @property
    def frames(self) -> list[int]:
        return sorted(self.faces)

    @property
    def first(self) -> int:
        return min(self.faces)

    @property
    def last(self) -> int:
        return max(self.faces)

    @property
    def score(self) -> float:
        """Screen time × size: the sum of face sizes over the frames where the face is seen."""
        return float(sum(f.size for f in self.faces.values()))

    def best_frame(self) -> int:
        """The frame where this face is largest and most frontal (for thumbnails)."""
        return max(self.faces, key=lambda i: self.faces[i].size * np.cos(np.radians(min(abs(self.faces[i].yaw), 80))))


@dataclass(frozen=True)
class ClipScan:
    """What one pass over a clip found: its tracks (main actor first), frame count and scene cuts."""

    tracks: list[Track]
    frame_count: int
    cuts: frozenset[int]
    width: int
    height: int

    def track(self, index: int) -> Track:
        if not 0 <= index < len(self.tracks):
            from common.errors import NoFaceFound

            raise NoFaceFound(
                f"The clip has {len(self.tracks)} face track(s); there is no track {index}.",
                hint="Run `famswap tracks CLIP` to see them, then pick one with --track.",
            )
        return self.tracks[index]


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def link_tracks(per_frame: Sequence[Sequence[Face]], cuts: Iterable[int] = (), min_frames: int = 3) -> list[Track]:
    """Greedily link faces frame to frame by box IoU; a scene cut or a long gap ends every open track.

    Tracks seen in fewer than ``min_frames`` frames are dropped (detector noise); the rest are sorted by score,
    best first, and renumbered 0..N-1.
    """
    cut_set = set(cuts)
    finished: list[Track] = []
    open_tracks: list[Track] = []
    for i, faces in enumerate(per_frame):
        if i in cut_set:
            finished.extend(open_tracks)
            open_tracks = []
        # Close tracks that have not been seen for too long.
        still_open: list[Track] = []
        for t in open_tracks:
            (still_open if i - t.last <= _MAX_GAP else finished).append(t)
        open_tracks = still_open
        pairs = sorted(
            ((box_iou(t.faces[t.last].box, f.box), ti, fi) for ti, t in enumerate(open_tracks) for fi, f in enumerate(faces)),
            reverse=True,
        )
        used_t: set[int] = set()
        used_f: set[int] = set()
        for iou, ti, fi in pairs:
            if iou < _MIN_IOU:
                break
            if ti in used_t or fi in used_f:
                continue
            open_tracks[ti].faces[i] = faces[fi]
            used_t.add(ti)
            used_f.add(fi)
        for fi, f in enumerate(faces):
            if fi not in used_f:
                open_tracks.append(Track(index=-1, faces={i: f}))
    finished.extend(open_tracks)
    kept = [t for t in finished if len(t.faces) >= min_frames]
    kept.sort(key=lambda t: t.score, reverse=True)
    for n, t in enumerate(kept):
        t.index = n
    return kept


def detect_cuts(frame_diffs: Sequence[float], threshold: float = 0.5) -> frozenset[int]:
    """Frame indices that start a new shot, from per-frame histogram distances (index i compares i-1 and i)."""
    return frozenset(i for i, d in enumerate(frame_diffs) if i > 0 and d > threshold)


def frame_signature(rgb: np.ndarray) -> np.ndarray:
    """A small normalised HSV histogram of a frame, for cut detection."""
    small = cv2.resize(rgb, (64, 36), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel()
    return hist / max(float(hist.sum()), 1.0)


def signature_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance of two normalised histograms: 0 same, 1 disjoint."""
    return float(0.5 * np.abs(a - b).sum())


def scan_clip(
    frames: Iterable[np.ndarray],
    detect: Callable[[np.ndarray, int], list[Face]],
    fps: float,
    *,
    on_frame: Callable[[int], None] | None = None,
) -> ClipScan:
    """Run ``detect(frame, timestamp_ms)`` over every frame, find cuts and link the faces into tracks."""
    per_frame: list[list[Face]] = []
    diffs: list[float] = []
    previous: np.ndarray | None = None
    width = height = 0
    for i, frame in enumerate(frames):
        height, width = frame.shape[:2]
        signature = frame_signature(frame)
        diffs.append(0.0 if previous is None else signature_distance(previous, signature))
        previous = signature
        per_frame.append(detect(frame, int(round(i * 1000.0 / fps))))
        if on_frame is not None:
            on_frame(i)
    cuts = detect_cuts(diffs)
    return ClipScan(link_tracks(per_frame, cuts), len(per_frame), cuts, width, height)


def contact_sheet(
    thumbnails: Sequence[np.ndarray], *, cell: int = 160, columns: int = 4, first_number: int = 0
) -> np.ndarray:
    """Numbered thumbnails (RGB, any size) in a grid: thumbnail k is labelled ``first_number + k`` (the command line
    counts tracks from 0, the bot's "Face N" buttons from 1). Returns an RGB uint8 image."""
    if not thumbnails:
        raise ValueError("no thumbnails")
    columns = min(columns, len(thumbnails))
    rows = (len(thumbnails) + columns - 1) // columns
    sheet = np.full((rows * cell, columns * cell, 3), 24, np.uint8)
    for n, thumb in enumerate(thumbnails):
        r, c = divmod(n, columns)
        tile = cv2.resize(thumb, (cell - 8, cell - 8), interpolation=cv2.INTER_AREA)
        y, x = r * cell + 4, c * cell + 4
        sheet[y : y + cell - 8, x : x + cell - 8] = tile
        label = str(first_number + n)
        scale = cell / 160
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 1.0 * scale, 2)
        cv2.rectangle(sheet, (x, y), (x + tw + 12, y + th + 12), (0, 0, 0), -1)
        cv2.putText(sheet, label, (x + 6, y + th + 6), cv2.FONT_HERSHEY_SIMPLEX, 1.0 * scale, (255, 255, 255), 2, cv2.LINE_AA)
    return sheet


def track_thumbnail(frame: np.ndarray, face: Face, margin: float = 0.35) -> np.ndarray:
    """A square crop around a face's box with some margin, clipped to the frame."""
    x0, y0, x1, y1 = face.box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = frame.shape[:2]
    a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    c, d = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    crop = frame[b:d, a:c]
    return crop if crop.size else frame


def save_image(path: Path, rgb: np.ndarray, quality: int = 88) -> Path:
    """Write an RGB image (JPEG or PNG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"could not write {path}")
    return path
