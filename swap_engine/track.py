"""Face tracks through a clip, the people they show, scene cuts, and a numbered contact sheet.

Input: per-frame lists of `landmarks.Face` (pixel coordinates of the frame). Output: `Track` records (one face through
one shot), sorted so that track 0 has the most screen time × face size, and `Person` records (the tracks of one
person across cuts, grouped by face identity embeddings, see ``find_people``), sorted the same way: person 0 is the
scene's main person. Only people whose face is large enough to swap are offered, at most ``MAX_PEOPLE``. Pure
functions apart from `scan_clip`, which runs the landmark detector once over every frame it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
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
# Faces smaller than this (inter-ocular based size, px) are never swapped (`ConvertOptions.min_face_px`), so a person
# whose face never gets this large is not offered.
MIN_SWAP_FACE_PX = 24.0
MAX_PEOPLE = 12  # tiles on a contact sheet
EMBED_FACES_PER_TRACK = 4  # faces of a track whose identity embeddings decide who it shows (~80 ms each on a CPU)

Box = tuple[float, float, float, float]
EmbedFn = Callable[[np.ndarray, list[Box]], np.ndarray]  # (RGB frame, boxes) -> (len(boxes), D) embeddings
GroupFn = Callable[[list[np.ndarray], set[tuple[int, int]]], list[int]]  # (per-track sets, apart pairs) -> labels

# Cut detection on the HSV-histogram distance of consecutive frames (0 same, 1 disjoint):
CUT_ALWAYS = 0.5  # this far apart is a cut whatever the frames around
CUT_FLOOR = 0.2  # below this, a histogram change alone is never a cut
CUT_CONTRAST = 5.0  # ... above it, a change this many times the median change of the frames around is a cut
CUT_WINDOW = 15  # frames either side that make that median
FACE_JUMP = 0.12  # a change this big while every face leaves its place (no box overlap with the frame before) is a cut
# ... both only when the change is spread over the picture: at least this share of a 3 × 3 grid's cells changed (a
# cut: 0.67-0.89 on stage_multi_face.mp4; a hand or a board over a third of the frame: 0.22).
CUT_SPREAD = 0.5
_GRID = 3
_CELL_CHANGED = 0.3  # a cell whose own histogram moved this far has changed


def _view(face: Face) -> float:
    """How good a thumbnail the face makes: its size, less the more it is turned (an unknown yaw counts as frontal)."""
    return float(face.size * np.cos(np.radians(min(abs(face.yaw), 80)))) if not np.isnan(face.yaw) else float(face.size)


class _FaceRun:
    """What a track and a person both offer over their ``faces`` (frame → Face, in frame order)."""

    faces: dict[int, Face]

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
        return max(self.faces, key=lambda i: _view(self.faces[i]))

    def best_size(self) -> float:
        """The face's size at its best frame (px)."""
        return float(self.faces[self.best_frame()].size)


@dataclass
class Track(_FaceRun):
    """One person's face through the clip: frame index → Face (frame pixel coordinates)."""

    index: int
    faces: dict[int, Face] = field(default_factory=dict)
    # Identity embeddings of a few of its faces, (k, D) float32 (``attach_embeddings``); None when not computed.
    embeddings: np.ndarray | None = None


@dataclass(frozen=True)
class Person(_FaceRun):
    """One person through the clip: their tracks (one per shot, or more where the detector lost them), never two at
    the same time. Offers what a track offers over all of them: ``faces`` (frame → Face), frames, score."""

    index: int
    tracks: tuple[Track, ...]

    @cached_property
    def faces(self) -> dict[int, Face]:  # type: ignore[override]  # a merged view, not a field
        merged: dict[int, Face] = {}
        for t in self.tracks:
            merged.update(t.faces)
        return dict(sorted(merged.items()))

    @property
    def number(self) -> int:
        """The person's number on the contact sheet, the bot's "Face N" and the command line's ``--face N``."""
        return self.index + 1

    def best_track(self) -> Track:
        """The track with the person's best view (largest, most frontal face): their tile on the contact sheet."""
        return max(self.tracks, key=lambda t: _view(t.faces[t.best_frame()]))


def people_from_labels(
    tracks: Sequence[Track], labels: Sequence[int], *, min_face_px: float = MIN_SWAP_FACE_PX,
    max_people: int = MAX_PEOPLE,
) -> tuple[Person, ...]:  # fmt: skip
    """The people that ``labels`` (a group label per track) make of ``tracks``: ranked by screen time × size over
    all their shots (person 0 is the scene's main person), without those whose face is never ``min_face_px`` large,
    at most ``max_people``."""
    groups: dict[int, list[Track]] = {}
    for t, label in zip(tracks, labels, strict=True):
        groups.setdefault(int(label), []).append(t)
    candidates = [sorted(g, key=lambda t: t.first) for g in groups.values()]
    candidates = [g for g in candidates if max(t.best_size() for t in g) >= min_face_px]
    candidates.sort(key=lambda g: sum(t.score for t in g), reverse=True)
    return tuple(Person(n, tuple(g)) for n, g in enumerate(candidates[:max_people]))


@dataclass(frozen=True)
class ClipScan:
    """What one pass over a clip found: its tracks (most screen time × size first), frame count, scene cuts, and the
    people the tracks show (``labels``: a person group per track; without them, each track is a person of its own,
    as scans saved before people were known read back)."""

    tracks: list[Track]
    frame_count: int
    cuts: frozenset[int]
    width: int
    height: int
    labels: tuple[int, ...] | None = None

    @cached_property
    def people(self) -> tuple[Person, ...]:
        """The people offered for swapping, main person first (see ``people_from_labels``)."""
        labels = self.labels if self.labels is not None else tuple(range(len(self.tracks)))
        return people_from_labels(self.tracks, labels)

    def person(self, index: int) -> Person:
        """Person ``index`` (0-based; "Face N" on the contact sheet is person N - 1)."""
        if not 0 <= index < len(self.people):
            from common.errors import NoFaceFound

            raise NoFaceFound(
                f"The clip shows {len(self.people)} person(s) large enough to swap; there is no face {index + 1}.",
                hint="Run `famswap tracks CLIP` to see them numbered on a contact sheet, then pick one with --face.",
            )
        return self.people[index]

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


def detect_cuts(
    frame_diffs: Sequence[float], boxes: Sequence[Sequence[Box]] | None = None,
    spreads: Sequence[float] | None = None,
) -> frozenset[int]:  # fmt: skip
    """Frame indices that start a new shot, from per-frame histogram distances (index i compares i-1 and i) and,
    when given, each frame's face boxes and the share of the picture that changed (``cells_changed``; without it,
    all of it).

    A cut is a change over ``CUT_ALWAYS``; or, spread over at least ``CUT_SPREAD`` of the picture, a change over
    ``CUT_FLOOR`` and ``CUT_CONTRAST`` times the median change of the ``CUT_WINDOW`` frames either side (a wide shot
    to a close-up of the same stage keeps much of its colours: 0.38 in stage_multi_face.mp4, against ~0.04 between
    its other frames), or a change over ``FACE_JUMP`` while both frames show faces and none of this frame's
    overlaps one of the frame before (the camera moved to someone else)."""
    d = np.asarray(frame_diffs, np.float64)
    cuts = set()
    for i in range(1, len(d)):
        if d[i] > CUT_ALWAYS:
            cuts.add(i)
            continue
        if spreads is not None and spreads[i] < CUT_SPREAD:
            continue
        around = np.concatenate([d[max(1, i - CUT_WINDOW) : i], d[i + 1 : i + 1 + CUT_WINDOW]])
        median = float(np.median(around)) if len(around) else 0.0
        if d[i] > CUT_FLOOR and d[i] > CUT_CONTRAST * median:
            cuts.add(i)
        elif boxes is not None and d[i] > FACE_JUMP and boxes[i] and boxes[i - 1]:
            if all(box_iou(a, b) < _MIN_IOU for a in boxes[i] for b in boxes[i - 1]):
                cuts.add(i)
    return frozenset(cuts)


def frame_signature(rgb: np.ndarray) -> np.ndarray:
    """A small normalised HSV histogram of a frame, for cut detection."""
    small = cv2.resize(rgb, (64, 36), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel()
    return hist / max(float(hist.sum()), 1.0)


def signature_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance of two normalised histograms: 0 same, 1 disjoint."""
    return float(0.5 * np.abs(a - b).sum())


def cell_signatures(rgb: np.ndarray) -> np.ndarray:
    """``(9, 32)`` normalised HSV histograms of a 3 × 3 grid over the frame: where in the picture a change is."""
    small = cv2.cvtColor(cv2.resize(rgb, (72, 36), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2HSV)
    h, w = small.shape[:2]
    out = []
    for r in range(_GRID):
        for c in range(_GRID):
            cell = small[r * h // _GRID : (r + 1) * h // _GRID, c * w // _GRID : (c + 1) * w // _GRID]
            hist = cv2.calcHist([cell], [0, 1], None, [8, 4], [0, 180, 0, 256]).ravel()
            out.append(hist / max(float(hist.sum()), 1.0))
    return np.stack(out)


def cells_changed(a: np.ndarray, b: np.ndarray) -> float:
    """The share of grid cells (``cell_signatures``) whose histogram changed by more than ``_CELL_CHANGED``."""
    return float(((0.5 * np.abs(a - b).sum(axis=1)) > _CELL_CHANGED).mean())


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
    spreads: list[float] = []
    previous: tuple[np.ndarray, np.ndarray] | None = None
    width = height = 0
    for i, frame in enumerate(frames):
        height, width = frame.shape[:2]
        signature = (frame_signature(frame), cell_signatures(frame))
        diffs.append(0.0 if previous is None else signature_distance(previous[0], signature[0]))
        spreads.append(0.0 if previous is None else cells_changed(previous[1], signature[1]))
        previous = signature
        per_frame.append(detect(frame, int(round(i * 1000.0 / fps))))
        if on_frame is not None:
            on_frame(i)
    cuts = detect_cuts(diffs, [[f.box for f in faces] for faces in per_frame], spreads)
    return ClipScan(link_tracks(per_frame, cuts), len(per_frame), cuts, width, height)


def embedding_frames(track: Track, count: int = EMBED_FACES_PER_TRACK) -> list[int]:
    """The frames whose faces are embedded: the best view (largest, most frontal) in each of ``count`` equal
    stretches of the track, so that one blurred or turned frame does not decide who the track shows."""
    frames = track.frames
    chunks = np.array_split(np.asarray(frames), min(count, len(frames)))
    return sorted(int(max(chunk, key=lambda i: _view(track.faces[int(i)]))) for chunk in chunks if len(chunk))


def attach_embeddings(
    frames: Iterable[np.ndarray], tracks: Sequence[Track], embed: EmbedFn, *, count: int = EMBED_FACES_PER_TRACK,
    min_face_px: float = MIN_SWAP_FACE_PX,
) -> int:  # fmt: skip
    """Set ``track.embeddings`` ((k, D) float32) from ``count`` faces of each track whose best face is at least
    ``min_face_px`` (smaller ones are never offered, and their embeddings are unreliable); reads ``frames`` (the
    clip's, in order) until the last one needed. Returns how many faces were embedded."""
    wanted: dict[int, list[Track]] = {}
    for t in tracks:
        if t.best_size() >= min_face_px:
            for i in embedding_frames(t, count):
                wanted.setdefault(i, []).append(t)
    found: dict[int, list[np.ndarray]] = {}
    done = 0
    last = max(wanted, default=-1)
    for i, frame in enumerate(frames):
        if i > last:
            break
        if i not in wanted:
            continue
        vectors = embed(frame, [t.faces[i].box for t in wanted[i]])
        for t, v in zip(wanted[i], vectors, strict=True):
            found.setdefault(t.index, []).append(v)
        done += len(wanted[i])
    for t in tracks:
        if t.index in found:
            t.embeddings = np.stack(found[t.index]).astype(np.float32)
    return done


def overlapping(tracks: Sequence[Track]) -> set[tuple[int, int]]:
    """Pairs (i, j), i < j, of positions in ``tracks`` whose frame ranges overlap: two faces seen at the same time
    are two people."""
    return {
        (i, j)
        for i in range(len(tracks))
        for j in range(i + 1, len(tracks))
        if tracks[i].first <= tracks[j].last and tracks[j].first <= tracks[i].last
    }


def find_people(scan: ClipScan, group: GroupFn) -> ClipScan:
    """``scan`` with its tracks grouped into people: ``group(embeddings per track, apart pairs)`` labels them; tracks
    without embeddings are people of their own, and tracks seen at the same time are never one person."""
    sets = [t.embeddings if t.embeddings is not None else np.zeros((0, 128), np.float32) for t in scan.tracks]
    labels = group(sets, overlapping(scan.tracks))
    return replace(scan, labels=tuple(int(v) for v in labels))


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
