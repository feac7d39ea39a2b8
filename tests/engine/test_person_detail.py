"""The person's own detail: landmark warps, the band it lays, the picks and how they carry over frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from swap_engine import align
from swap_engine.person_detail import (
    ReferenceDetail,
    References,
    displacement_fields,
    fine_band,
    part_weights,
    shape_descriptor,
    warp_by_field,
)

SIZE = 128


def _points(
    seed: int = 0, *, eye_open: float = 1.0, right_open: float | None = None, mouth_open: float = 1.0
) -> np.ndarray:
    """478 plausible crop points: the canonical template spread over the face, eyes opened by ``eye_open``, the lips
    by ``mouth_open``."""
    rng = np.random.default_rng(seed)
    base = align.template_points(SIZE)
    centre = base.mean(axis=0)
    pts = centre + rng.normal(0.0, SIZE * 0.15, (478, 2))
    from swap_engine.landmarks import LEFT_EYE, LIPS_INNER, LIPS_OUTER, RIGHT_EYE

    lips = tuple(sorted(set(LIPS_OUTER + LIPS_INNER)))
    for eye, opening in (
        (RIGHT_EYE, eye_open if right_open is None else right_open), (LEFT_EYE, eye_open), (lips, mouth_open)
    ):  # fmt: skip
        idx = list(eye)
        c = pts[idx].mean(axis=0)
        pts[idx, 1] = c[1] + (pts[idx, 1] - c[1]) * opening
    return np.clip(pts, 2, SIZE - 3).astype(np.float32)


def _textured(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def test_displacement_field_moves_the_reference_onto_the_new_landmarks():
    src = np.array([[x, y] for x in range(16, 112, 8) for y in range(16, 112, 8)], np.float32)
    dst = src + np.array([5.0, -3.0], np.float32)  # the same face 5 px right and 3 px up
    field = displacement_fields(src[None], dst, SIZE, sigma=2.0)[0]
    inside = field[30:90, 30:90]
    assert np.allclose(inside[..., 0], -5.0, atol=0.05) and np.allclose(inside[..., 1], 3.0, atol=0.05)
    image = _textured(1)
    moved = warp_by_field(image, field)
    # A pixel of the source shows up 5 px right and 3 px up.
    assert np.abs(moved[40:80, 45:85].astype(int) - image[43:83, 40:80].astype(int)).max() <= 1


def test_fine_band_is_what_a_smaller_face_cannot_show():
    smooth = cv2.resize(_textured(2), (16, 16), interpolation=cv2.INTER_AREA)
    smooth = cv2.resize(smooth, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    assert np.abs(fine_band(smooth, 16)).mean() < 3  # next to nothing above 16 px in a face made at 16 px
    sharp = _textured(2).astype(np.float32)
    assert np.abs(fine_band(sharp, 16)).mean() > 10


def _refs(n: int, opens: list[float], mask_value: float = 1.0) -> References:
    crops = np.stack([_textured(10 + k) for k in range(n)])
    points = np.stack([_points(0, eye_open=o) for o in opens])
    masks = np.full((n, SIZE, SIZE), mask_value, np.float32)
    return References(crops, points, masks)


def test_picks_follow_the_expression_not_the_two_peoples_features():
    refs = _refs(3, [0.3, 1.0, 1.6])
    detail = ReferenceDetail(refs, model_size=32, picks=1, memory=0.0)
    assert list(detail.choose(_points(0, eye_open=1.55))[0]) == [2]
    assert list(detail.choose(_points(0, eye_open=0.35))[0]) == [0]
    # An actor whose eyes are narrow by nature (typical 0.5): eyes as open as usual for them pick her usual eyes.
    detail.learn_actor([_points(0, eye_open=0.5)] * 5)
    assert list(detail.choose(_points(0, eye_open=0.5))[0]) == [1]


def test_a_closed_mouth_picks_a_closed_mouth_whatever_each_one_usually_does():
    """Enrolled mostly talking (a half-open mouth is their typical one), an actor whose mouth stays closed: the mouth
    picks the enrolled closed mouth, not the typical open one (taken relatively, his teeth went over her lips)."""
    opens = [1.8, 1.8, 1.9, 1.7, 0.1]
    refs = References(
        np.stack([_textured(30 + k) for k in range(len(opens))]),
        np.stack([_points(0, mouth_open=o) for o in opens]),
        np.ones((len(opens), SIZE, SIZE), np.float32),
    )
    detail = ReferenceDetail(refs, model_size=32, picks=1, memory=0.0)
    detail.learn_actor([_points(0, mouth_open=0.1)] * 5)
    assert list(detail.choose(_points(0, mouth_open=0.1))[2]) == [4]


def test_the_eyes_and_the_mouth_pick_their_own_faces():
    """No enrolled face has open eyes *and* an open mouth: the eyes come from one, the mouth from another."""
    refs = References(
        np.stack([_textured(20), _textured(21)]),
        np.stack([_points(0, eye_open=1.2, mouth_open=0.3), _points(0, eye_open=0.3, mouth_open=1.8)]),
        np.ones((2, SIZE, SIZE), np.float32),
    )
    detail = ReferenceDetail(refs, model_size=32, picks=1, memory=0.0)
    right, left, mouth = detail.choose(_points(0, eye_open=1.2, mouth_open=1.8))
    assert list(right) == [0] and list(left) == [0] and list(mouth) == [1]


def test_each_eye_picks_its_own_face():
    """A wink in the set is no pick for an actor with both eyes open, however close its other eye is."""
    refs = References(
        np.stack([_textured(22), _textured(23)]),
        np.stack([_points(0, eye_open=1.0, right_open=0.1), _points(0, eye_open=0.7)]),
        np.ones((2, SIZE, SIZE), np.float32),
    )
    detail = ReferenceDetail(refs, model_size=32, picks=1, memory=0.0)
    right, left, _ = detail.choose(_points(0, eye_open=1.0))
    assert list(right) == [1] and list(left) == [0]


def test_a_change_of_pick_fades_in_over_frames():
    refs = _refs(2, [0.3, 1.6])
    detail = ReferenceDetail(refs, model_size=32, picks=1, memory=0.6)
    assert detail.choose(_points(0, eye_open=0.3))[0] == {0: 1.0}
    after = detail.choose(_points(0, eye_open=1.6))[0]
    assert 0.3 < after[1] < 0.5 and after[0] == pytest.approx(1 - after[1])  # not a jump to the new face
    for _ in range(8):
        after = detail.choose(_points(0, eye_open=1.6))[0]
    assert after == {1: pytest.approx(1.0)}
    detail.reset()  # at a cut it starts over
    assert detail.choose(_points(0, eye_open=0.3))[0] == {0: 1.0}


def test_detail_only_where_the_reference_shows_its_own_face():
    face = np.full((SIZE, SIZE, 3), 128, np.uint8)
    points = _points(0)
    no_face = ReferenceDetail(_refs(2, [1.0, 1.0], mask_value=0.0), model_size=32)  # all hair, say
    assert np.array_equal(no_face.apply(face, points), face)
    with_face = ReferenceDetail(_refs(2, [1.0, 1.0], mask_value=1.0), model_size=32)
    out = with_face.apply(face, points).astype(int)
    assert np.abs(out - 128).mean() > 5  # the references' texture is laid on
    assert abs(out.mean() - 128) < 2  # ... as detail: the drawn face's light and colour stay


def test_shape_descriptor_ignores_where_the_crop_is_cut():
    pts = _points(3)
    assert np.allclose(shape_descriptor(pts, SIZE), shape_descriptor(pts * 2, SIZE * 2), atol=1e-6)


def test_a_region_no_enrolled_face_shows_keeps_the_drawn_face():
    """A wink the person never made: that eye keeps the decoder's face, the other eye gets the person's detail."""
    from swap_engine.landmarks import LEFT_EYE, RIGHT_EYE
    from swap_engine.segment import part_hulls

    refs = _refs(6, [0.9, 0.95, 1.0, 1.05, 1.1, 1.0])
    detail = ReferenceDetail(refs, model_size=32, memory=0.0)
    face = np.full((SIZE, SIZE, 3), 128, np.uint8)
    wink = _points(0, eye_open=1.0, right_open=0.05)
    changed = np.abs(detail.apply(face, wink).astype(int) - 128).mean(axis=2)
    right = part_hulls(wink, SIZE, (RIGHT_EYE,), 0.0) > 0
    left = part_hulls(wink, SIZE, (LEFT_EYE,), 0.0) > 0
    assert changed[left].mean() > 5 * max(changed[right].mean(), 0.2)


def test_one_enrolled_photo_is_enough():
    refs = _refs(1, [1.0])
    detail = ReferenceDetail(refs, model_size=32)
    detail.learn_actor([_points(0, eye_open=o) for o in (0.8, 1.0, 1.2)])
    face = np.full((SIZE, SIZE, 3), 128, np.uint8)
    for opening in (1.0, 1.1, 0.2):
        out = detail.apply(face, _points(0, eye_open=opening))
        assert out.shape == face.shape and out.dtype == np.uint8
    assert detail.choose(_points(0)) == [{0: 1.0}, {0: 1.0}, {0: 1.0}]
    with pytest.raises(ValueError, match="no reference faces"):
        ReferenceDetail(References(refs.crops[:0], refs.points[:0], refs.masks[:0]), model_size=32)


def test_over_the_eyes_the_persons_own_eye_replaces_the_drawn_blob():
    """An iris bigger than the fine band: only the wider band over the eyes brings it whole."""
    from swap_engine.landmarks import LEFT_EYE, RIGHT_EYE

    points = _points(0)
    crop = np.full((SIZE, SIZE, 3), 160, np.uint8)
    centres = [points[list(eye)].mean(axis=0) for eye in (RIGHT_EYE, LEFT_EYE)]
    for c in centres:
        cv2.circle(crop, (round(float(c[0])), round(float(c[1]))), 7, (40, 40, 40), -1)
    refs = References(crop[None], points[None], np.ones((1, SIZE, SIZE), np.float32))
    face = np.full((SIZE, SIZE, 3), 160, np.uint8)
    darkness = []
    for eye_px in (None, 8):
        out = ReferenceDetail(refs, model_size=64, band_px=32, eye_px=eye_px).apply(face, points)
        darkness.append(np.mean([160 - float(out[round(float(c[1])), round(float(c[0]))].mean()) for c in centres]))
    plain, wide = darkness
    assert wide > 60 and wide > 1.5 * plain  # most of the reference's dark iris (120 below the skin)


def test_the_parts_share_the_face_each_eye_on_its_side_the_mouth_below():
    from swap_engine.landmarks import LEFT_EYE, LIPS_OUTER, RIGHT_EYE

    points = np.full((478, 2), SIZE / 2, np.float32)
    rng = np.random.default_rng(4)
    for group, (x, y) in ((RIGHT_EYE, (0.33, 0.4)), (LEFT_EYE, (0.67, 0.4)), (LIPS_OUTER, (0.5, 0.78))):
        points[list(group)] = np.array([x, y]) * SIZE + rng.normal(0, 2, (len(group), 2))
    points[168] = (0.5 * SIZE, 0.4 * SIZE)  # between the eyes
    points[1] = (0.5 * SIZE, 0.58 * SIZE)  # nose tip
    points[0] = (0.5 * SIZE, 0.7 * SIZE)  # upper lip's top
    share = part_weights(points, SIZE)
    assert share.shape == (3, SIZE, SIZE) and np.allclose(share.sum(axis=0), 1.0)
    for part, group in enumerate((RIGHT_EYE, LEFT_EYE, LIPS_OUTER)):
        x, y = np.round(points[list(group)].mean(axis=0)).astype(int)
        assert share[part, y, x] == 1.0  # each part draws all of its own feature


def _mouth_face(gap: float) -> np.ndarray:
    """478 crop points of a face whose lips part ``gap`` px: eyes and brows in place, the lips two ellipses (the
    outer line and the opening), every other landmark on a grid clear of the mouth."""
    from swap_engine.landmarks import LEFT_BROW, LEFT_EYE, LIPS_INNER, LIPS_OUTER, RIGHT_BROW, RIGHT_EYE

    cx, cy = 0.5 * SIZE, 0.74 * SIZE
    grid = [(x, y) for y in range(6, SIZE - 5, 8) for x in range(6, SIZE - 5, 8)
            if abs(x - cx) > 0.26 * SIZE or abs(y - cy) > 0.2 * SIZE]  # fmt: skip
    pts = np.array([grid[k % len(grid)] for k in range(478)], np.float64)
    for group, (x, y), (a, b) in (
        (RIGHT_EYE, (0.33, 0.4), (0.08, 0.03)), (LEFT_EYE, (0.67, 0.4), (0.08, 0.03)),
        (RIGHT_BROW, (0.33, 0.32), (0.1, 0.015)), (LEFT_BROW, (0.67, 0.32), (0.1, 0.015)),
    ):  # fmt: skip
        t = np.linspace(0, 2 * np.pi, len(group), endpoint=False)
        pts[list(group)] = np.stack([x * SIZE + a * SIZE * np.cos(t), y * SIZE + b * SIZE * np.sin(t)], 1)
    for group, half_width, half_height in (
        (LIPS_OUTER, 0.17 * SIZE, 0.05 * SIZE + gap / 2), (LIPS_INNER, 0.13 * SIZE, gap / 2 + 0.2)
    ):  # fmt: skip
        t = np.linspace(np.pi, 3 * np.pi, len(group), endpoint=False)  # from the left corner, along the lower lip
        pts[list(group)] = np.stack([cx + half_width * np.cos(t), cy - half_height * np.sin(t)], 1)
    pts[[61, 291]] = pts[[78, 308]] + np.array([[-0.04 * SIZE, 0.0], [0.04 * SIZE, 0.0]])  # corners on the line
    pts[168], pts[1] = (0.5 * SIZE, 0.4 * SIZE), (0.5 * SIZE, 0.58 * SIZE)  # between the eyes, the nose tip
    return pts.astype(np.float32)


def _mouth_crop(points: np.ndarray, opening_grey: int, blur: float = 0.0) -> np.ndarray:
    """A skin-grey crop with red lips and a mouth opening of ``opening_grey`` where ``points`` have them."""
    from swap_engine.landmarks import LIPS_INNER, LIPS_OUTER

    crop = np.full((SIZE, SIZE, 3), 170, np.uint8)
    cv2.fillConvexPoly(crop, np.round(points[list(LIPS_OUTER)]).astype(np.int32), (200, 90, 90))
    cv2.fillConvexPoly(crop, np.round(points[list(LIPS_INNER)]).astype(np.int32), (opening_grey,) * 3)
    return cv2.GaussianBlur(crop, (0, 0), blur) if blur else crop


def test_mouth_opening_reads_closed_an_o_and_a_shout():
    from swap_engine.person_detail import mouth_opening

    assert mouth_opening(_mouth_face(0.0)) < 0.05
    # (the corners sit 0.04 of the side beyond the opening's ends)
    assert mouth_opening(_mouth_face(0.2 * SIZE)) == pytest.approx(0.2 / 0.34, abs=0.02)


def test_over_the_mouth_the_persons_own_mouth_opens_as_wide_as_the_actors():
    """The decoder draws a small soft O for a shout the person never made; their own O, warped to the actor's opening,
    replaces it. Without the mouth band (the mouth's detail fading for a shape never enrolled) the O stays small."""
    from swap_engine.landmarks import LIPS_INNER, LIPS_OUTER
    from swap_engine.segment import part_hulls

    o_mouth, shout = _mouth_face(0.12 * SIZE), _mouth_face(0.22 * SIZE)
    refs = References(_mouth_crop(o_mouth, 30)[None], o_mouth[None], np.ones((1, SIZE, SIZE), np.float32))
    drawn = _mouth_crop(_mouth_face(0.06 * SIZE), 90, blur=3.0)  # the decoder's small soft O
    # Where the actor's mouth is open beyond the decoder's small O (an edge in from the actor's lips, clear of the O).
    beyond = (part_hulls(shout, SIZE, (LIPS_INNER,), -0.02) > 0.5) & (
        part_hulls(_mouth_face(0.06 * SIZE), SIZE, (LIPS_OUTER,), 0.02) < 0.5
    )
    assert beyond.sum() > 40
    dark = {}
    for mouth in (False, True):
        out = ReferenceDetail(refs, model_size=64, band_px=32, eye_px=8, mouth=mouth).apply(drawn, shout)
        dark[mouth] = 170 - float(out[beyond].mean(axis=1).mean())
    assert dark[True] > 70 and dark[False] < 30  # the person's dark opening there (140 below the skin), or none of it


def test_closed_lips_are_not_torn_open_for_a_shout():
    """Lips enrolled only closed, pulled apart to a shout, tear into stacked lip lines: that mouth keeps the drawn
    face, while an O opened as wide is the person's."""
    from swap_engine.landmarks import LIPS_OUTER
    from swap_engine.segment import part_hulls

    closed, o_mouth, shout = _mouth_face(0.0), _mouth_face(0.12 * SIZE), _mouth_face(0.22 * SIZE)
    drawn = _mouth_crop(_mouth_face(0.06 * SIZE), 90, blur=3.0)
    lips = part_hulls(shout, SIZE, (LIPS_OUTER,), 0.0) > 0.5
    changed = {}
    for name, pts in (("closed", closed), ("o", o_mouth)):
        refs = References(_mouth_crop(pts, 30)[None], pts[None], np.ones((1, SIZE, SIZE), np.float32))
        out = ReferenceDetail(refs, model_size=64, band_px=32, mouth=True).apply(drawn, shout)
        changed[name] = float(np.abs(out.astype(int) - drawn.astype(int))[lips].mean())
    assert changed["closed"] < 2.0 and changed["o"] > 20


def test_open_as_parts_or_closes_the_lips_and_leaves_the_corners():
    from swap_engine.person_detail import mouth_opening, open_as

    closed = _mouth_face(0.0)
    for opening in (0.5, 0.0, 0.8):
        moved = open_as(_mouth_face(0.1 * SIZE), opening)
        assert mouth_opening(moved) == pytest.approx(opening, abs=0.01)
        assert np.allclose(moved[[61, 291, 1, 168]], closed[[61, 291, 1, 168]])  # the corners, the nose, the eyes
    parted = open_as(closed, 0.5)
    assert parted[14, 1] > closed[14, 1] and parted[13, 1] < closed[13, 1]  # each lip half the way


def test_an_actors_closed_lips_get_the_persons_closed_lips_though_they_usually_talk():
    """A person enrolled talking has a half-open mouth for typical. Their usual mouth moved as the actor's moves would
    stay half open over the actor's closed lips, too far from their one closed mouth to take it; opened as much as the
    actor's, it is closed, and the decoder's parted mouth is replaced by their closed lips."""
    from swap_engine.landmarks import LIPS_INNER
    from swap_engine.segment import part_hulls

    enrolled = [_mouth_face(g * SIZE) for g in (0.1, 0.12, 0.14, 0.0)]  # talking, and one closed mouth
    refs = References(np.stack([_mouth_crop(p, 30) for p in enrolled]), np.stack(enrolled),
                      np.ones((4, SIZE, SIZE), np.float32))  # fmt: skip
    closed = _mouth_face(0.0)
    detail = ReferenceDetail(refs, model_size=64, band_px=32, mouth=True)
    detail.learn_actor([closed, closed, _mouth_face(0.01 * SIZE)])
    parted = _mouth_face(0.06 * SIZE)
    drawn = _mouth_crop(parted, 40, blur=1.0)  # the decoder's parted dark mouth
    gap = part_hulls(parted, SIZE, (LIPS_INNER,), -0.01) > 0.5
    for _ in range(3):
        out = detail.apply(drawn, closed)
    assert float(out[gap].mean()) > 100  # lips there (the drawn gap is 40)
