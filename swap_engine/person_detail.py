"""The person's own detail on the drawn face: what a briefly trained small decoder draws soft, from their enrolled faces.

A ``lite`` decoder trained for minutes on a CPU draws 64 px faces whose eyes and lips are soft blobs, and pasted over
a 250 px face they stay blobs. The enrolled face set holds the person's real faces at 256 px, cut with the same
alignment as conversion's crops. For each swapped face ``ReferenceDetail``:

- picks, for each eye (with its iris and brow) and for the mouth apart, the enrolled faces shaped most like the
  actor's there (landmark shapes only, no identity model; eyes and brows compared as departures from their owner's
  typical face, the lips as they are), weighted, the weights carried over frames so a change of pick fades in;
- warps them onto where the person's features sit on this frame (their typical layout moved as the actor's face
  moves: the decoder draws the person's brows and eyes, not the actor's), by a smooth field through the 478 points;
- replaces the drawn face's band finer than ``band_px`` (the crop minus the crop seen at ``band_px`` px) with
  theirs, and over the eyes the wider band finer than ``eye_px`` (a drawn eye a few pixels wide is a dark blob: their
  own lids, white and iris replace all of it but its light), only where their own face shows (their stored
  face-without-hair mask, warped along: never their hair), and not in a region (an eye) that no enrolled face shows
  as the actor has it (a wink the person never made): there the drawn face stays;
- with ``mouth``, over the mouth all of it but the light of the skin round the lips: their own lips and mouth, warped
  open or shut to the actor's opening (the decoder draws a small soft O for a shout it never saw, and parted lips
  over an actor's closed ones), as far as a mouth stretches (``STRETCH_FULL``: an O opens to a shout, closed lips do
  not); beyond it the drawn mouth stays.

The drawn face keeps everything coarser than ``band_px`` (``eye_px``; round the mouth, the skin's light): light,
colour, the pose and the expression.

Contract (numpy + OpenCV): faces ``(S, S, 3)`` uint8 RGB; points ``(478, 2)`` float crop pixels; the references are
``(N, S, S, 3)`` uint8, ``(N, 478, 2)`` float32 and masks ``(N, S, S)`` float32 in [0, 1], at the same side and
alignment coverage as the faces they are laid on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from swap_engine.align import rescale_crops
from swap_engine.landmarks import LEFT_BROW, LEFT_EYE, LIPS_INNER, LIPS_OUTER, RIGHT_BROW, RIGHT_EYE
from swap_engine.segment import part_hulls

# Landmark groups whose *shape* (centred on the group) says how the face looks: eye opening and gaze (the iris
# points 468-472 go with the eye on the image's left, 473-477 with the other), brows, lips open or closed.
_RIGHT_IRIS = tuple(range(468, 473))
_LEFT_IRIS = tuple(range(473, 478))
SHAPE_GROUPS: tuple[tuple[int, ...], ...] = (
    RIGHT_EYE + _RIGHT_IRIS,
    LEFT_EYE + _LEFT_IRIS,
    RIGHT_BROW,
    LEFT_BROW,
    LIPS_OUTER,
    LIPS_INNER,
)
_LAYOUT = tuple(sorted(set(RIGHT_EYE + LEFT_EYE + LIPS_OUTER + (1, 4, 6, 152))))  # where the features sit (pose)
# Groups compared as they are, not as departures from each person's typical face (indices into SHAPE_GROUPS): the
# lips. Open or closed is the same for everyone, and a person enrolled talking has a half-open mouth for typical: taken
# relatively, her closed mouth matched his usual talking one and laid his teeth over her closed lips.
ABSOLUTE_GROUPS: tuple[int, ...] = (4, 5)
LAYOUT_WEIGHT = 0.5  # of the layout term against the shape terms
# The face's parts, each with enrolled faces of its own: each eye with its brow, and the mouth. A face set of a few
# dozen photos rarely holds one face whose eyes *and* lips are as the actor's are on a frame (his eyes open, his mouth
# wide): picked whole, the closest face is a compromise of all three, and a wink in the set was among the picks for
# his two open eyes. Indices into SHAPE_GROUPS; where each part draws: ``part_weights``.
PARTS: tuple[tuple[int, ...], ...] = ((0, 2), (1, 3), (4, 5))
# Regions whose detail fades on its own when no enrolled face shows them as the actor has them (a wink, a shout the
# person never made; with ``mouth`` the mouth fades by how far it stretches instead): each eye with its brow, and the
# mouth; indices into SHAPE_GROUPS, the landmarks of the area, and the part whose picks draw it.
REGIONS: tuple[tuple[tuple[int, ...], tuple[int, ...], int], ...] = (
    ((0, 2), RIGHT_EYE + RIGHT_BROW, 0),
    ((1, 3), LEFT_EYE + LEFT_BROW, 1),
    ((4, 5), LIPS_OUTER, 2),
)
_MOUTH = 2  # the mouth's index in PARTS and in REGIONS
CONFIDENT_BELOW = 1.5  # x the region's usual gap: the person's detail in full
CONFIDENT_NONE = 3.0  # x: none of it
# With ``mouth`` the mouth's picks are warped open or shut to the actor's opening, and instead of the region fade
# above they are trusted as far as a mouth stretches: an O opened to a shout reads as a shout, closed lips pulled
# apart tear into stacked lip lines. The stretch is (target opening + floor) / (picks' opening + floor), openings as
# ``mouth_opening``; the person's mouth in full up to STRETCH_FULL, none from STRETCH_NONE (there the drawn mouth
# stays). Measured on W→M: her O (0.48) opened to his widest shout (0.81) is a stretch of 1.7 and reads as a shout;
# lips enrolled nearly closed (0.095) pulled to 0.4 (3.4) tore.
STRETCH_FULL = 2.0
STRETCH_NONE = 3.0
STRETCH_FLOOR = 0.03
MOUTH_MARGIN = 0.08  # of the side: the mouth's area is the lips grown by this (over the drawn mouth too)
MOUTH_LIGHT = 1 / 16  # of the side: the Gaussian whose skin round the lips gives the mouth its light
_GROUP_SLICES: list[slice] = []
_at = 0
for _g in SHAPE_GROUPS:
    _GROUP_SLICES.append(slice(_at, _at + 2 * len(_g)))
    _at += 2 * len(_g)


def part_weights(points: np.ndarray, size: int) -> np.ndarray:
    """``(3, S, S)`` float32 summing to 1: how much of each pixel each part's picks draw (``PARTS``: the eye on the
    image's left with its brow, the other, the mouth), by where it is in the (upright, aligned) crop: the eyes'
    parts down to the nose tip, each on its side of the nose's bridge, the mouth's from the upper lip, linear ramps
    between."""
    p = np.asarray(points, np.float64)
    top, bottom = float(p[1, 1]), float(p[0, 1])  # nose tip, upper lip's top
    if bottom <= top + 1.0:
        top, bottom = top - 1.0, top + 1.0
    rows = np.clip((bottom - np.arange(size, dtype=np.float64)) / (bottom - top), 0.0, 1.0).astype(np.float32)
    upper = np.repeat(rows[:, None], size, axis=1)
    half = max(1.0, 0.06 * size)  # the ramp between the eyes' parts, either side of the bridge (landmark 168)
    cols = np.clip((p[168, 0] + half - np.arange(size, dtype=np.float64)) / (2 * half), 0.0, 1.0).astype(np.float32)
    left = np.repeat(cols[None, :], size, axis=0)  # 1 on the image's left
    return np.stack([upper * left, upper * (1.0 - left), 1.0 - upper])


def mouth_opening(points: np.ndarray) -> float:
    """The lips' gap (inner lips' middles, landmarks 13-14) over the mouth's width (corners 61-291): 0 closed, about
    0.5 for an O, 0.8-0.9 for a shout."""
    p = np.asarray(points, np.float64)
    width = max(float(np.linalg.norm(p[291] - p[61])), 1e-6)
    return float(np.linalg.norm(p[14] - p[13])) / width


# The lips without their corners, lower and upper (LIPS_OUTER and LIPS_INNER run from the left corner along the lower
# lip, then back along the upper one).
_LOWER_LIP = LIPS_OUTER[1:10] + LIPS_INNER[1:10]
_UPPER_LIP = LIPS_OUTER[11:] + LIPS_INNER[11:]


def open_as(points: np.ndarray, opening: float) -> np.ndarray:
    """``points`` ``(478, 2)`` with the lips moved apart or together (each half the way, across the line through the
    mouth's corners) until ``mouth_opening`` is about ``opening``; float32."""
    p = np.asarray(points, np.float32).copy()
    across = p[291] - p[61]
    width = max(float(np.linalg.norm(across)), 1e-6)
    down = np.array([-across[1], across[0]], np.float32) / width  # the corners' line turned a quarter
    if float(np.dot(down, p[152] - p[13])) < 0:  # towards the chin
        down = -down
    change = 0.5 * (opening * width - float(np.linalg.norm(p[14] - p[13])))
    p[list(_LOWER_LIP)] += change * down
    p[list(_UPPER_LIP)] -= change * down
    return p


def shape_descriptor(points: np.ndarray, size: int) -> np.ndarray:
    """``(D,)`` float32: each group's points about its own centre, then the layout about its centre, in units of
    ``size`` (so crops of any side compare)."""
    p = np.asarray(points, np.float64) / float(size)
    parts = [(p[list(g)] - p[list(g)].mean(axis=0)).ravel() for g in SHAPE_GROUPS]
    layout = p[list(_LAYOUT)]
    parts.append(LAYOUT_WEIGHT * (layout - layout.mean(axis=0)).ravel())
    return np.concatenate(parts).astype(np.float32)


def displacement_fields(srcs: np.ndarray, dst: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """``(K, size, size, 2)`` float32: for each pixel of the ``dst`` layout, the offset to where it sits in each of
    the ``K`` ``srcs`` layouts, interpolated smoothly from the landmark pairs (``srcs`` ``(K, N, 2)``, ``dst``
    ``(N, 2)`` crop pixels): a normalised Gaussian splat of width ``sigma`` px, and a 6x wider one (made at a
    quarter of the side) filling the gaps between landmarks and beyond them."""
    srcs = np.asarray(srcs, np.float64)
    dst = np.asarray(dst, np.float64)
    at = np.round(dst).astype(np.int64)
    inside = (at[:, 0] >= 0) & (at[:, 0] < size) & (at[:, 1] >= 0) & (at[:, 1] < size)
    at = at[inside]
    k = len(srcs)
    values = [(srcs[i][inside] - dst[inside]).astype(np.float32) for i in range(k)]
    values.append(np.ones((len(at), 1), np.float32))
    num = np.zeros((size, size, 2 * k + 1), np.float32)  # offsets of every source, then the landmark count
    np.add.at(num, (at[:, 1], at[:, 0]), np.concatenate(values, axis=1))
    fine = cv2.GaussianBlur(num, (0, 0), sigma).reshape(size, size, -1)
    small = max(8, size // 4)
    coarse = cv2.resize(num, (small, small), interpolation=cv2.INTER_AREA).reshape(small, small, -1)
    coarse = cv2.GaussianBlur(coarse, (0, 0), 6 * sigma * small / size).reshape(small, small, -1)
    # (INTER_AREA averages, so a landmark's weight per full-size pixel is what the fine splat gives it)
    wide = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR).reshape(size, size, -1)
    # Where landmarks are dense the fine splat decides; between and beyond them the wide one takes over.
    mixed = fine + 0.05 * wide
    norm = np.maximum(mixed[..., -1:], 1e-8)
    fields: np.ndarray = (mixed[..., :-1] / norm).reshape(size, size, k, 2).transpose(2, 0, 1, 3)
    return np.ascontiguousarray(fields, dtype=np.float32)


@lru_cache(maxsize=4)
def _grid(size: int) -> np.ndarray:
    grid = np.mgrid[0:size, 0:size].astype(np.float32)  # (2, S, S): y, x
    grid.flags.writeable = False
    return grid


def warp_by_field(image: np.ndarray, field: np.ndarray) -> np.ndarray:
    """``image`` (any channels, ``(S, S[, C])``) resampled so that pixel ``x`` shows ``image[x + field[x]]``."""
    grid = _grid(field.shape[0])
    map_x = grid[1] + field[..., 0]
    map_y = grid[0] + field[..., 1]
    out: np.ndarray = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def fine_band(image: np.ndarray, model_size: int) -> np.ndarray:
    """``image`` ``(S, S, C)`` float32 minus the same image brought down to ``model_size`` px and back: the detail a
    decoder drawing ``model_size`` px faces cannot hold. Float32, about zero-mean."""
    side = image.shape[0]
    small = cv2.resize(image, (model_size, model_size), interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
    band: np.ndarray = image - coarse
    return band


@dataclass(frozen=True)
class References:
    """A person's enrolled faces for detail: crops ``(N, S, S, 3)`` uint8 RGB, points ``(N, 478, 2)`` float32, masks
    ``(N, S, S)`` float32 (their face without hair), all at side S."""

    crops: np.ndarray
    points: np.ndarray
    masks: np.ndarray

    @property
    def size(self) -> int:
        return int(self.crops.shape[1])

    def resized(self, size: int) -> References:
        """The same faces at side ``size`` (scaled as crops of one alignment relate, so the points still fit)."""
        if size == self.size:
            return self
        scaled = (self.points * (size / self.size)).astype(np.float32)
        return References(rescale_crops(self.crops, size), scaled, rescale_crops(self.masks, size))


class ReferenceDetail:
    """Per face track: ``apply(face, points)`` returns the drawn face with the person's detail laid over it; call in
    frame order, ``reset()`` at cuts, ``learn_actor`` once with the actor's faces over the clip. ``amount`` scales
    the band; each part of the face (``PARTS``: each eye, the mouth) blends its own ``picks`` enrolled faces,
    weighted by how close their shapes are, the weights carried over frames (``memory``) so a change of pick fades
    in. Over the eyes the band is wider (finer than ``eye_px``), over the mouth (``mouth``) it is all but the light,
    and there the picks are drawn from the closest mostly (weights to the power ``sharpen``): a blend of three eyes
    looking three ways is a blur."""

    def __init__(
        self, refs: References, model_size: int, *, amount: float = 1.0, picks: int = 3, memory: float = 0.6,
        warp_sigma: float | None = None, band_px: int | None = None, eye_px: int | None = None,
        sharpen: float = 3.0, mouth: bool = False,
    ) -> None:  # fmt: skip
        if len(refs.crops) == 0:
            raise ValueError("no reference faces")
        self.refs = refs
        self.size = refs.size
        self.model_size = model_size
        self.band_px = int(band_px or model_size)  # detail finer than a face this many px wide is the reference's
        self.eye_px = int(eye_px or self.band_px)  # ... and over the eyes, finer than this
        self.sharpen = float(sharpen)
        self.mouth = bool(mouth)  # over the mouth: all but the light of the skin round the lips
        self.openings = np.array([mouth_opening(p) for p in refs.points])  # (N,)
        self._stretch_trust: float | None = None
        self.amount = float(amount)
        self.picks = max(1, min(int(picks), len(refs.crops)))
        self.memory = float(memory)
        self.warp_sigma = warp_sigma if warp_sigma is not None else self.size / 64.0
        # Shapes (all but the lips, ABSOLUTE_GROUPS) are compared as departures from each person's own typical face:
        # a man with narrow eyes looking ahead should pick her eyes looking ahead, not her squints.
        # Without the actor's typical face (``learn_actor``) the shapes compare as they are.
        self.shapes = np.stack([shape_descriptor(p, self.size) for p in refs.points])  # (N, D)
        self.typical = np.median(self.shapes, axis=0)
        self._relative_cols = np.ones(self.shapes.shape[1], np.float32)  # 0 on the columns compared as they are
        for g in ABSOLUTE_GROUPS:
            self._relative_cols[_GROUP_SLICES[g]] = 0.0
        # What is subtracted from the actor's shape and the references' shapes before they compare (``_relative``):
        # nothing until ``learn_actor``, then each one's typical face on the relative columns.
        self._actor_shift = np.zeros(self.shapes.shape[1], np.float32)
        self._refs = self.shapes
        self.typical_points = np.median(refs.points, axis=0)  # (478, 2): the person's own layout
        self.actor_points: np.ndarray | None = None
        self._weights: list[dict[int, float]] = [{} for _ in PARTS]
        columns = np.arange(self.shapes.shape[1])
        layout = columns[_at:]  # where the features sit: every part's picks should have the actor's pose
        self._part_cols = [np.concatenate([columns[_GROUP_SLICES[g]] for g in groups] + [layout]) for groups in PARTS]
        self._region_cols = [np.concatenate([columns[_GROUP_SLICES[g]] for g in groups]) for groups, _, _ in REGIONS]
        # Per region, how far a pick typically is from the actor's shape on this clip (``learn_actor``; before it,
        # how far the person's own faces spread): a frame whose best picks are much further off than that shows
        # something the person never enrolled (a wink, a shout), and that region keeps the drawn face.
        self.spread = np.array([
            max(float(np.median(np.sqrt(((self.shapes - self.typical)[:, cols] ** 2).mean(axis=1)))), 1e-4)
            for cols in self._region_cols
        ])  # fmt: skip
        self.region_scale = self.spread
        self._confidence: np.ndarray | None = None

    def _gaps(self, shape: np.ndarray, refs: np.ndarray, picks: list[dict[int, float]]) -> np.ndarray:
        """Per region, its part's picks' weighted distance to ``shape`` (both already relative, see ``_relative``)."""
        return np.array([
            sum(w * float(np.sqrt(((refs[i, cols] - shape[cols]) ** 2).mean())) for i, w in picks[part].items())
            for cols, (_, _, part) in zip(self._region_cols, REGIONS, strict=True)
        ])  # fmt: skip

    def _relative(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return shape_descriptor(points, self.size) - self._actor_shift, self._refs

    def _region_confidence(self, shape: np.ndarray, refs: np.ndarray, picks: list[dict[int, float]]) -> np.ndarray:
        """``(len(REGIONS),)`` in [0, 1]: 1 where the picks show the region about as well as usual
        (``CONFIDENT_BELOW`` x ``region_scale``), 0 from ``CONFIDENT_NONE`` x; carried over frames like the picks."""
        ratio = self._gaps(shape, refs, picks) / self.region_scale
        conf: np.ndarray = np.clip((CONFIDENT_NONE - ratio) / (CONFIDENT_NONE - CONFIDENT_BELOW), 0.0, 1.0)
        if self._confidence is not None:
            conf = self.memory * self._confidence + (1 - self.memory) * conf
        self._confidence = conf
        return conf

    def reset(self) -> None:
        self._weights = [{} for _ in PARTS]
        self._confidence = None
        self._stretch_trust = None

    def learn_actor(self, points: list[np.ndarray]) -> None:
        """The actor's typical shape, from their faces' crop points (``(478, 2)`` each, at this side) over the clip."""
        if not points:
            return
        actor_typical = np.median(np.stack([shape_descriptor(p, self.size) for p in points]), axis=0)
        self._actor_shift = self._relative_cols * actor_typical
        self._refs = self.shapes - self._relative_cols * self.typical
        self.actor_points = np.median(np.stack(points), axis=0)
        gaps = []
        for p in points:
            shape, refs = self._relative(p)
            gaps.append(self._gaps(shape, refs, [self._closest(shape, refs, cols) for cols in self._part_cols]))
        self.region_scale = np.maximum(np.median(np.stack(gaps), axis=0), 0.5 * self.spread)

    def person_layout(self, points: np.ndarray) -> np.ndarray:
        """Where the person's features sit on this frame: their own typical layout moved as the actor's face moves
        from its typical layout (the decoder draws the person's features, not the actor's). Without the actor's
        typical face, the actor's points as they are."""
        if self.actor_points is None:
            return np.asarray(points, np.float32)
        moved: np.ndarray = (np.asarray(points) - self.actor_points + self.typical_points).astype(np.float32)
        return moved

    def _closest(self, shape: np.ndarray, refs: np.ndarray, cols: np.ndarray) -> dict[int, float]:
        """This frame's picks alone, compared on ``cols``: the ``picks`` closest shapes, weighted by closeness
        (summing to 1)."""
        d = np.sqrt(((refs[:, cols] - shape[cols]) ** 2).mean(axis=1))  # (N,)
        order = np.argsort(d)[: self.picks]
        scale = max(float(d[order[0]]) * 0.25, 1e-6)
        weights = {int(i): float(np.exp(-(d[i] - d[order[0]]) / scale)) for i in order}
        return _normalised(weights)

    def _choose(self, shape: np.ndarray, refs: np.ndarray) -> list[dict[int, float]]:
        chosen = []
        for part, cols in enumerate(self._part_cols):
            now, before = self._closest(shape, refs, cols), self._weights[part]
            if before:
                mixed = {i: (1 - self.memory) * now.get(i, 0.0) + self.memory * before.get(i, 0.0)
                         for i in set(now) | set(before)}  # fmt: skip
                kept = _normalised(dict(sorted(mixed.items(), key=lambda kv: -kv[1])[: self.picks + 1]))
                now = _normalised({i: w for i, w in kept.items() if w > 0.02})
            chosen.append(now)
        self._weights = chosen
        return chosen

    def choose(self, points: np.ndarray) -> list[dict[int, float]]:
        """Per part (``PARTS``: each eye with its brow, the mouth), the enrolled faces to draw detail from and their
        weights (summing to 1), carried over from earlier frames."""
        return self._choose(*self._relative(points))

    def register(self, indices: list[int], points: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Enrolled faces ``indices`` and their masks warped onto the layout ``points``: ``(S, S, 3)`` float32 and
        ``(S, S)`` float32 each."""
        fields = displacement_fields(self.refs.points[indices], points, self.size, self.warp_sigma)
        out = []
        for index, field in zip(indices, fields, strict=True):
            crop = warp_by_field(self.refs.crops[index], field).astype(np.float32)
            out.append((crop, warp_by_field(self.refs.masks[index], field)))
        return out

    def _band(self, image: np.ndarray, eyes: np.ndarray | None, mouth: _Mouth | None) -> np.ndarray:
        """``image``'s band finer than ``band_px``, where the eyes are (``eyes`` ``(S, S, 1)``) finer than
        ``eye_px``, and where the mouth is (``mouth``) all of it but the light of the skin round the lips."""
        band = fine_band(image, self.band_px)
        wide: np.ndarray = band
        if eyes is not None:
            wide = wide + eyes * (fine_band(image, self.eye_px) - band)
        if mouth is not None:
            wide = wide + mouth.area * (mouth.band(image) - band)
        return wide

    def _mouth_trust(self, layout: np.ndarray, picks: dict[int, float]) -> float:
        """In [0, 1]: how far the mouth's ``picks`` may be warped to the opening of ``layout`` (``STRETCH_FULL``),
        carried over frames like the picks."""
        have = sum(w * float(self.openings[i]) for i, w in picks.items())
        stretch = (mouth_opening(layout) + STRETCH_FLOOR) / (have + STRETCH_FLOOR)
        trust = float(np.clip((STRETCH_NONE - stretch) / (STRETCH_NONE - STRETCH_FULL), 0.0, 1.0))
        if self._stretch_trust is not None:
            trust = self.memory * self._stretch_trust + (1 - self.memory) * trust
        self._stretch_trust = trust
        return trust

    def apply(self, face: np.ndarray, points: np.ndarray) -> np.ndarray:
        """``face`` ``(S, S, 3)`` uint8 (the decoder's, scaled to S) with its band finer than ``band_px`` (over the
        eyes, ``eye_px``; over the mouth with ``mouth``, all but the skin's light) replaced by the chosen enrolled
        faces' (``amount`` of it), each part by its own picks, where their face is and the region's picks are
        trusted."""
        if face.shape[:2] != (self.size, self.size):
            raise ValueError(f"face {face.shape[:2]} does not match the {self.size} px references")
        layout = self.person_layout(points)
        if self.mouth:
            # As open as the actor's mouth, not as the person's usual mouth moved by the actor's: a person enrolled
            # talking has a half-open mouth for typical, and an actor's closed lips would part theirs.
            layout = open_as(layout, mouth_opening(points))
        shape, refs = self._relative(points)
        picks = self._choose(shape, refs)
        drawn = face.astype(np.float32)
        confidence = self._region_confidence(shape, refs, picks).copy()
        hulls: list[np.ndarray | None] = [None] * len(REGIONS)
        eyes = None
        mouth = None
        if self.eye_px != self.band_px:
            eyes = part_hulls(layout, self.size, (RIGHT_EYE, LEFT_EYE), 0.035)
            eyes = cv2.GaussianBlur(eyes, (0, 0), max(1.0, self.size * 0.015))[..., None]
        if self.mouth:
            mouth = _Mouth.at(layout, self.size, drawn)
            # The mouth's picks are warped to the actor's opening: trusted as far as they stretch, not by shape.
            confidence[_MOUTH] = self._mouth_trust(layout, picks[_MOUTH])
            hulls[_MOUTH] = mouth.area[..., 0]
        trust = np.ones(face.shape[:2], np.float32)
        for k, (conf, (_, area, _)) in enumerate(zip(confidence, REGIONS, strict=True)):
            if conf < 1.0:
                hull = hulls[k]
                if hull is None:
                    hull = part_hulls(layout, self.size, (area,), 0.04)
                    hull = cv2.GaussianBlur(hull, (0, 0), max(1.0, self.size * 0.02))
                trust *= 1.0 - np.float32(1.0 - conf) * hull
        share = part_weights(layout, self.size)  # (3, S, S)
        # Per pixel: how much each enrolled face speaks for it: each part's picks by its share of the face, over the
        # eyes and the mouth with the wide band sharpened towards the closest pick.
        sharp: list[dict[int, float]] = []
        focus = np.zeros(face.shape[:2], np.float32)
        for feature in (eyes, None if mouth is None else mouth.area):
            if feature is not None:
                focus = np.maximum(focus, feature[..., 0])
        if eyes is not None or mouth is not None:
            sharp = [_normalised({i: w**self.sharpen for i, w in part.items()}) for part in picks]
        used = sorted({i for part in picks for i in part})
        band = np.zeros(face.shape, np.float32)
        cover = np.zeros(face.shape[:2], np.float32)  # how much of each pixel the references speak for
        for index, (crop, mask) in zip(used, self.register(used, layout), strict=True):
            weight = sum(np.float32(part.get(index, 0.0)) * share[k] for k, part in enumerate(picks))
            if sharp:
                sharp_weight = sum(np.float32(part.get(index, 0.0)) * share[k] for k, part in enumerate(sharp))
                weight = weight * (1.0 - focus) + sharp_weight * focus
            weight = weight * mask * trust
            band += weight[..., None] * self._band(crop, eyes, mouth)
            cover += weight
        # The drawn face's own band is replaced there, not added to: below the model's resolution the decoder drew
        # the features too, and both together would draw them twice as dark.
        own = self._band(drawn, eyes, mouth) * cover[..., None]
        out: np.ndarray = np.clip(
            drawn + np.float32(self.amount) * (band - own) + 0.5, 0, 255
        ).astype(np.uint8)
        return out


@dataclass(frozen=True)
class _Mouth:
    """Where the mouth is taken whole on one frame: ``area`` ``(S, S, 1)`` float32 in [0, 1] (the lips grown by
    ``MOUTH_MARGIN``, feathered), ``skin`` ``(S, S)`` float32 (1 off the lips), and the drawn face's ``light``
    ``(S, S, 3)`` there: its blur over the skin only, not the drawn mouth's own darkness."""

    area: np.ndarray
    skin: np.ndarray
    skin_light: np.ndarray
    light: np.ndarray

    @staticmethod
    def at(layout: np.ndarray, size: int, face: np.ndarray) -> _Mouth:
        area = part_hulls(layout, size, (LIPS_OUTER,), MOUTH_MARGIN)
        area = cv2.GaussianBlur(area, (0, 0), max(1.0, size * 0.025))[..., None]
        skin = (1.0 - part_hulls(layout, size, (LIPS_OUTER,), 0.01)).astype(np.float32)
        skin_light = np.maximum(_smooth(skin), 1e-3)
        light = _smooth(face * skin[..., None]) / skin_light[..., None]
        return _Mouth(area, skin, skin_light, light)

    def band(self, image: np.ndarray) -> np.ndarray:
        """``image`` ``(S, S, 3)`` float32 relit as the drawn face (times the drawn face's light over its own, both
        taken over the skin round the lips), less the drawn face's light: for the drawn face itself, all but its
        light. Relit by ratio, so a dark mouth stays dark and keeps its hue."""
        own = _smooth(image * self.skin[..., None]) / self.skin_light[..., None]
        band: np.ndarray = image * (self.light / np.maximum(own, 1.0)) - self.light
        return band


def _smooth(image: np.ndarray) -> np.ndarray:
    """``image`` ``(S, S[, C])`` float32 blurred by a Gaussian of ``MOUTH_LIGHT`` x S, made at a quarter of the side
    (it holds nothing finer)."""
    side = image.shape[0]
    small = cv2.resize(image, (max(8, side // 4),) * 2, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(1.0, small.shape[0] * MOUTH_LIGHT))
    out: np.ndarray = cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
    return out.reshape(image.shape)


def _normalised(weights: dict[int, float]) -> dict[int, float]:
    total = sum(weights.values())
    return {i: w / total for i, w in weights.items()}


def load_references(folder: Path, coverage: float) -> References:
    """A face-set folder's crops, points and masks as ``References`` at the set's own side. ``ValueError`` when the
    set was cut at another ``coverage`` than the faces it would be laid on (its crops would not line up)."""
    from swap_engine.faceset import load_faceset

    faces = load_faceset(folder)
    if abs(faces.coverage - coverage) > 1e-6:
        raise ValueError(f"{folder} was cut at coverage {faces.coverage}, conversion cuts at {coverage}")
    return References(faces.crops, faces.points.astype(np.float32), faces.masks.astype(np.float32))
