"""align: similarity fits, aligned crops that hold the eyes still, masks, and a faithful paste-back."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from swap_engine import align
from swap_engine.landmarks import LandmarkDetector
from swap_engine.media import load_image


def _similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def test_umeyama_recovers_a_known_similarity() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, size=(30, 2))
    truth = _similarity(1.7, 23.0, -40.0, 12.5)
    dst = align.transform_points(src, truth)
    np.testing.assert_allclose(align.umeyama(src, dst), truth, atol=1e-9)
    # Weighted, with noise on points that get no weight: still exact.
    noisy = dst.copy()
    noisy[:5] += rng.normal(0, 30, size=(5, 2))
    weights = np.r_[np.zeros(5), np.ones(25)]
    np.testing.assert_allclose(align.umeyama(src, noisy, weights), truth, atol=1e-9)
    # A mirrored target gives the best proper rotation, never a reflection.
    mirrored = align.umeyama(src, src * [-1, 1])
    assert np.linalg.det(mirrored[:, :2]) > 0
    with pytest.raises(ValueError):
        align.umeyama(np.ones((4, 2)), np.zeros((4, 2)))


def test_invert_and_transform_round_trip() -> None:
    matrix = _similarity(0.4, -75.0, 300.0, -20.0)
    points = np.random.default_rng(1).uniform(0, 900, size=(478, 2)).astype(np.float32)
    moved = align.transform_points(points, matrix)
    assert moved.dtype == np.float32
    np.testing.assert_allclose(align.transform_points(moved, align.invert(matrix)), points, atol=1e-3)
    assert align.matrix_scale(matrix) == pytest.approx(0.4)


def test_template_is_symmetric_and_fits_the_crop() -> None:
    t = align.TEMPLATE
    assert t.shape == (len(align.TEMPLATE_INDICES), 2) == (len(align.TEMPLATE_WEIGHTS), 2)
    np.testing.assert_allclose(t[[0, 1]][:, 0] + t[[3, 2]][:, 0], 1.0, atol=1e-9)  # eye corners mirror
    assert t[:, 1].min() == 0.0 and t[:, 1].max() == 1.0
    pixels = align.template_points(256, align.DEFAULT_COVERAGE)
    assert pixels.min() > 20 and pixels.max() < 236  # a margin all round at the default coverage


def _selfie_faces(clips: Path, model: Path, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from swap_engine.video import read_frames

    found = []
    with LandmarkDetector(model, video=True, max_faces=1) as detector:
        for i, frame in enumerate(
            itertools.islice(read_frames(clips / "selfie_woman_expressive.mp4"), count)
        ):
            faces = detector.detect(frame, i * 33)
            if faces and i % 3 == 0:
                found.append((frame, faces[0].points))
    return found


@pytest.fixture(scope="module")
def selfie_faces(clips: Path, landmarker_model: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    # 90 frames = 3 s: blinks, grimaces and small head turns.
    return _selfie_faces(clips, landmarker_model, 90)


def test_aligned_eyes_stay_on_the_template(selfie_faces: list[tuple[np.ndarray, np.ndarray]]) -> None:
    size = 256
    target = ((align.TEMPLATE_EYES - 0.5) / align.DEFAULT_COVERAGE + 0.5) * size
    errors, centres = [], []
    for frame, points in selfie_faces:
        aligned = align.align_face(frame, points, size)
        assert aligned.crop.shape == (size, size, 3) and aligned.crop.dtype == np.uint8
        assert aligned.matrix.shape == (2, 3) and aligned.matrix.dtype == np.float64
        eyes = np.array([aligned.points[[33, 133]].mean(axis=0), aligned.points[[362, 263]].mean(axis=0)])
        errors.append(np.linalg.norm(eyes - target, axis=1))
        centres.append(eyes)
    errors_px, spread_px = (
        np.array(errors),
        np.linalg.norm(np.array(centres) - np.mean(centres, axis=0), axis=2),
    )
    print(
        f"{len(errors)} selfie frames at 256 px: eye centre to template mean {errors_px.mean():.2f} px, "
        f"max {errors_px.max():.2f} px; spread about their own mean {spread_px.mean():.2f} px, max {spread_px.max():.2f}"
    )
    assert len(errors) >= 25
    assert errors_px.mean() < 5.0 and errors_px.max() < 10.0
    assert spread_px.max() < 5.0


def test_face_mask(selfie_faces: list[tuple[np.ndarray, np.ndarray]]) -> None:
    frame, points = selfie_faces[0]
    aligned = align.align_face(frame, points, 256)
    with_forehead = align.face_mask(aligned.points, 256)
    without = align.face_mask(aligned.points, 256, forehead=False, feather_px=0)
    for mask in (with_forehead, without):
        assert mask.shape == (256, 256) and mask.dtype == np.float32
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        for x, y in aligned.points[[1, 33, 263, 61, 291]]:  # nose tip, eye and mouth corners: inside
            assert mask[round(y), round(x)] == pytest.approx(1.0, abs=1e-3)
        assert mask[2, 2] == 0.0 and mask[253, 253] == 0.0
    lifted = align.face_mask(aligned.points, 256, feather_px=0)
    assert lifted.sum() > without.sum() * 1.05
    assert (lifted[0] == 0).all()  # the lift stays inside the crop at the default coverage
    top = aligned.points[10]
    above = (round(top[1]) - 8, round(top[0]))  # a little over the mesh's top: forehead only with the lift
    assert with_forehead[above] > 0.9 and without[above] == 0.0
    assert set(np.unique(align.face_mask(aligned.points, 256, feather_px=0))) > {
        0.0,
        1.0,
    }  # anti-aliased edge


def test_paste_back_of_an_unchanged_crop_reproduces_the_frame(
    selfie_faces: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    frame, points = selfie_faces[-1]
    aligned = align.align_face(frame, points, 256)
    full = np.ones((256, 256), np.float32)
    pasted = align.paste_back(frame, aligned.crop, aligned.matrix, full)
    assert pasted.shape == frame.shape and pasted.dtype == np.uint8 and pasted is not frame
    # The region the crop covers, a few pixels in from its border (where the mask's edge is interpolated).
    inside = cv2.warpAffine(full, align.invert(aligned.matrix), frame.shape[1::-1]) > 0.999
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    error = np.abs(pasted.astype(np.int16) - frame.astype(np.int16))[inside]
    print(
        f"paste_back of an unchanged 256 px crop: mean abs error {error.mean():.2f} levels over {inside.sum()} px"
    )
    assert inside.sum() > 0.2 * frame.shape[0] * frame.shape[1]
    assert error.mean() < 3.0
    # Nothing outside the warped mask changes, and an empty mask changes nothing at all.
    outside = cv2.warpAffine(full, align.invert(aligned.matrix), frame.shape[1::-1]) == 0
    assert np.array_equal(pasted[outside], frame[outside])
    assert np.array_equal(align.paste_back(frame, aligned.crop, aligned.matrix, np.zeros_like(full)), frame)


def test_paste_back_handles_faces_off_the_edge(photos: Path, landmarker_model: Path) -> None:
    image = load_image(photos / "obama.jpg")
    with LandmarkDetector(landmarker_model) as detector:
        points = detector.detect(image)[0].points
    shifted = points - np.float32([points[:, 0].min() + 40, 0])  # the face pokes out of the left edge
    aligned = align.align_face(image, shifted, 128)
    mask = align.face_mask(aligned.points, 128)
    pasted = align.paste_back(image, np.full_like(aligned.crop, 255), aligned.matrix, mask)
    assert pasted.shape == image.shape
    assert (pasted[:, :5] != image[:, :5]).any()  # drew up to the left edge without failing


def test_warp_crop_does_not_alias_when_shrinking() -> None:
    stripes = np.zeros((1200, 1200, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: any aliasing shows up as bands
    matrix = _similarity(0.2, 10.0, -20.0, -20.0)  # shrink 5x with a slight turn
    crop = align.warp_crop(stripes, matrix, 200)
    plain = cv2.warpAffine(stripes, matrix, (200, 200), flags=cv2.INTER_LINEAR)
    assert abs(float(crop.mean()) - 127.5) < 6
    assert crop.std() < 10 < plain.std()


def test_warp_crop_shrinking_keeps_the_geometry() -> None:
    # A soft blob off-centre: the pre-shrunk path must put it exactly where a plain warp does.
    yy, xx = np.mgrid[0:1500, 0:1500]
    blob = (255 * np.exp(-((xx - 900.0) ** 2 + (yy - 500.0) ** 2) / (2 * 60.0**2))).astype(np.uint8)
    image = np.ascontiguousarray(np.stack([blob] * 3, axis=-1))
    matrix = _similarity(0.15, -30.0, 40.0, 120.0)
    fast = align.warp_crop(image, matrix, 256)[..., 0].astype(np.float64)
    plain = cv2.warpAffine(image, matrix, (256, 256), flags=cv2.INTER_LINEAR)[..., 0].astype(np.float64)

    def centroid(a: np.ndarray) -> np.ndarray:
        ys, xs = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
        return np.array([(xs * a).sum(), (ys * a).sum()]) / a.sum()

    np.testing.assert_allclose(centroid(fast), centroid(plain), atol=0.3)
    np.testing.assert_allclose(
        centroid(fast), align.transform_points(np.array([[900.0, 500.0]]), matrix)[0], atol=0.3
    )
