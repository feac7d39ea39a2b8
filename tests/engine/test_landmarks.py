"""landmarks: real faces found with sane shapes and pose signs; dogs refused; small faces found on tiles."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from swap_engine.landmarks import BLENDSHAPE_NAMES, NUM_POINTS, Face, LandmarkDetector, box_iou, tile_grid
from swap_engine.media import load_image


@pytest.fixture(scope="module")
def detector(landmarker_model: Path) -> Iterator[LandmarkDetector]:
    with LandmarkDetector(landmarker_model, min_confidence=0.8) as found:
        yield found


def _frames(path: Path, count: int) -> list[np.ndarray]:
    from swap_engine.video import read_frames

    return list(itertools.islice(read_frames(path, max_frames=count), count))


def _one(detector: LandmarkDetector, image: np.ndarray) -> Face:
    faces = detector.detect(image)
    assert len(faces) == 1
    return faces[0]


def test_frontal_portrait(detector: LandmarkDetector, photos: Path) -> None:
    image = load_image(photos / "obama.jpg")
    face = _one(detector, image)
    assert face.points.shape == (NUM_POINTS, 2) and face.points.dtype == np.float32
    assert face.depth is not None and face.depth.shape == (NUM_POINTS,) and face.depth.dtype == np.float32
    assert face.blendshapes is not None and face.blendshapes.shape == (len(BLENDSHAPE_NAMES),) == (52,)
    assert 0.0 <= face.blendshapes.min() and face.blendshapes.max() <= 1.0
    assert face.pose is not None and face.pose.shape == (4, 4)
    height, width = image.shape[:2]
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert 150 < face.size < 400  # the face is about 280 px in a 910 px wide portrait
    # A frontal portrait: every angle within a few degrees of zero.
    assert abs(face.yaw) < 8 and abs(face.pitch) < 8 and abs(face.roll) < 8
    # Landmark 1 (nose tip) sits between the outer eye corners 33 and 263, image-left eye first.
    assert face.points[33, 0] < face.points[1, 0] < face.points[263, 0]


def test_pose_signs_follow_the_image(detector: LandmarkDetector, photos: Path) -> None:
    image = load_image(photos / "two_people.jpg")
    faces = detector.detect(image)
    assert len(faces) == 2 and faces[0].size >= faces[1].size
    left = min(faces, key=lambda f: f.box[0])
    # Obama, on the left, turns so that his nose points to the image's right.
    assert left.yaw > 10
    # Mirrored, the same turn reads as the opposite yaw and roll (compared on the same crop: the pose also
    # depends a little on where the face sits in the picture).
    half = np.ascontiguousarray(image[:, : image.shape[1] // 2])
    plain, mirrored = _one(detector, half), _one(detector, np.ascontiguousarray(half[:, ::-1]))
    assert plain.yaw > 10
    assert mirrored.yaw == pytest.approx(-plain.yaw, abs=3)
    assert mirrored.roll == pytest.approx(-plain.roll, abs=3)
    assert mirrored.pitch == pytest.approx(plain.pitch, abs=3)
    # Turning the picture counter-clockwise raises roll by about the same angle; pitch barely moves.
    portrait = load_image(photos / "obama.jpg")
    upright = _one(detector, portrait)
    height, width = portrait.shape[:2]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), 15, 1.0)  # positive = counter-clockwise
    turned = _one(detector, cv2.warpAffine(portrait, turn, (width, height)))
    assert turned.roll - upright.roll == pytest.approx(15, abs=4)
    assert turned.pitch == pytest.approx(upright.pitch, abs=5)


def test_dog_is_no_face_at_enrollment_confidence(
    detector: LandmarkDetector, photos: Path, landmarker_model: Path
) -> None:
    dog = load_image(photos / "dog_no_human_face.jpg")
    assert detector.detect(dog) == []  # tiles are tried too (tiles="empty") and find nothing either
    # At MediaPipe's default threshold the dog passes: the reason enrollment uses 0.8.
    with LandmarkDetector(landmarker_model, min_confidence=0.5, tiles="never") as lenient:
        assert len(lenient.detect(dog)) == 1


def test_rejects_bad_arrays_and_use_after_close(landmarker_model: Path) -> None:
    detector = LandmarkDetector(landmarker_model)
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    assert detector.detect(np.zeros((64, 64, 3), np.uint8)) == []
    detector.close()
    detector.close()
    with pytest.raises(RuntimeError):
        detector.detect(np.zeros((64, 64, 3), np.uint8))


def test_video_mode_tracks_with_increasing_timestamps(landmarker_model: Path, clips: Path) -> None:
    frames = _frames(clips / "tiny_man_noaudio.mp4", 12)
    with LandmarkDetector(landmarker_model, video=True, max_faces=1) as detector:
        faces = [detector.detect(frame, round(i * 40)) for i, frame in enumerate(frames)]
        assert all(len(f) == 1 for f in faces)
        # A face moves little between consecutive frames at 25 fps.
        steps = [np.abs(a[0].points - b[0].points).mean() for a, b in itertools.pairwise(faces)]
        assert max(steps) < 0.05 * faces[0][0].size
        with pytest.raises(ValueError, match="increase"):
            detector.detect(frames[0], 40)
        assert len(detector.detect(frames[0])) == 1  # no timestamp: one frame later


def test_tile_grid_covers_the_frame() -> None:
    for width, height in ((640, 360), (1280, 720), (480, 480), (333, 777)):
        covered = np.zeros((height, width), bool)
        for x, y, side in tile_grid(width, height):
            assert 0 <= x and x + side <= width and 0 <= y and y + side <= height
            covered[y : y + side, x : x + side] = True
        assert covered.all()


def test_small_faces_found_on_tiles(landmarker_model: Path, clips: Path) -> None:
    # The stage clip opens on a performer and, small at the left edge, a pianist (about 27 px tall).
    frames = _frames(clips / "stage_multi_face.mp4", 6)
    with (
        LandmarkDetector(landmarker_model, video=True, tiles="never") as plain,
        LandmarkDetector(landmarker_model, video=True, tiles="always") as tiled,
    ):
        plain_counts = [len(plain.detect(f, i * 33)) for i, f in enumerate(frames)]
        tiled_faces = [tiled.detect(f, i * 33) for i, f in enumerate(frames)]
    assert max(plain_counts) <= 1
    best = max(tiled_faces, key=len)
    assert len(best) >= 2
    for a, b in itertools.combinations(best, 2):
        assert box_iou(a.box, b.box) == 0.0  # distinct people, not one face found twice
    assert all(math.isfinite(f.yaw) for f in best)
    print(
        f"stage_multi_face first {len(frames)} frames: plain {plain_counts}, tiled {[len(f) for f in tiled_faces]}"
    )


def test_video_mode_never_returns_one_face_twice(landmarker_model: Path, clips: Path) -> None:
    # From about frame 58 of this selfie, MediaPipe's VIDEO mode with num_faces=2 returns the tracked face plus a
    # fresh detection of the same face on every other frame (boxes overlapping ~93 %).
    frames = _frames(clips / "selfie_woman_expressive.mp4", 70)
    with LandmarkDetector(landmarker_model, video=True, max_faces=2) as detector:
        counts = [len(detector.detect(frame, i * 33)) for i, frame in enumerate(frames)]
    assert counts == [1] * len(frames)
