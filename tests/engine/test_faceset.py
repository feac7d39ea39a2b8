"""faceset: real photos and a selfie clip become aligned, diverse crops; bad input is a reason, never a crash."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from common.errors import NoFaceFound
from swap_engine import align
from swap_engine.faceset import (
    BLURRY,
    DUPLICATE,
    EXTREME_POSE,
    FACESET_JSON,
    NO_FACE,
    SIMILAR,
    TOO_SMALL,
    UNREADABLE,
    build_faceset,
    load_faceset,
)
from swap_engine.landmarks import NUM_POINTS


def _kept_sources(out: Path) -> list[str]:
    return [face["source"] for face in json.loads((out / FACESET_JSON).read_text())["faces"]]


def test_two_portraits_give_one_face_each(photos: Path, landmarker_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    report = build_faceset([photos / "obama.jpg", photos / "biden.jpg"], out, landmarker_model)
    assert [r.source for r in report.kept] == ["obama.jpg", "biden.jpg"]
    assert report.problems == [] and report.notes == []
    assert sorted(p.name for p in (out / "faces").iterdir()) == [
        "0000.mask.png", "0000.png", "0001.mask.png", "0001.png"
    ]
    assert report.summary().startswith("2 faces kept from 2 photos; poses: mostly frontal")
    loaded = load_faceset(out)
    assert loaded.crops.shape == (2, 256, 256, 3) and loaded.crops.dtype == np.uint8
    assert loaded.points.shape == (2, NUM_POINTS, 2) and loaded.points.dtype == np.float32
    assert loaded.size == 256 and loaded.coverage == align.DEFAULT_COVERAGE
    assert loaded.masks.shape == (2, 256, 256) and loaded.masks.dtype == np.float32
    np.testing.assert_allclose(loaded.points, np.stack([r.points for r in report.kept]), atol=0.01)
    record = loaded.records[0]
    assert record.frame is None and record.blendshapes is not None and record.blendshapes.shape == (52,)
    assert abs(record.yaw) < 10 and record.size > 150 and record.blur > 0
    # The stored points describe the stored crop: the eyes are where the template puts them.
    eyes = np.array([loaded.points[0][[33, 133]].mean(axis=0), loaded.points[0][[362, 263]].mean(axis=0)])
    target = ((align.TEMPLATE_EYES - 0.5) / align.DEFAULT_COVERAGE + 0.5) * 256
    assert np.abs(eyes - target).max() < 8


def _hair_in_hull(crop: np.ndarray, points: np.ndarray, hair_model: Path) -> np.ndarray:
    """Boolean (S, S): pixels inside the raised landmark hull that the hair segmenter is sure are hair."""
    from swap_engine.segment import HairSegmenter

    with HairSegmenter(hair_model) as segmenter:
        hair = segmenter.hair(crop)
    hull = align.face_mask(points, crop.shape[0], forehead=True, feather_px=0) > 0.5
    return hull & (hair > 0.9)


def test_hair_aware_mask_excludes_the_curls(
    photos: Path, landmarker_model: Path, hair_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "set"
    build_faceset([photos / "man_curly_glasses.jpg"], out, landmarker_model, hair_model=hair_model)
    loaded = load_faceset(out)
    crop, points, mask = loaded.crops[0], loaded.points[0], loaded.masks[0]
    curls = _hair_in_hull(crop, points, hair_model)
    # The landmark hull alone reaches into his curls (else this test would prove nothing) ...
    assert curls.sum() > 0.03 * curls.size
    hull_only = load_faceset(_without_masks(out, tmp_path / "v1"))  # no hair model: the plain hull
    assert hull_only.masks[0][curls].mean() > 0.5
    # ... the stored mask leaves them out, and keeps the eyes, nose and mouth whole.
    assert mask[curls].mean() < 0.05
    from swap_engine.landmarks import LEFT_EYE, LIPS_OUTER, RIGHT_EYE

    x, y = np.round(points[list(RIGHT_EYE + LEFT_EYE + LIPS_OUTER + (1, 4, 6))]).astype(int).T
    assert mask[y, x].min() > 0.9


def _without_masks(folder: Path, dest: Path) -> Path:
    """A copy of a face set as version 1 wrote it: no mask files, no mask keys."""
    import shutil

    shutil.copytree(folder, dest)
    doc = json.loads((dest / FACESET_JSON).read_text())
    doc["version"] = 1
    for face in doc["faces"]:
        (dest / face.pop("mask")).unlink()
    (dest / FACESET_JSON).write_text(json.dumps(doc))
    return dest


def test_version_one_sets_get_their_masks_on_load(
    photos: Path, landmarker_model: Path, hair_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "set"
    build_faceset([photos / "man_curly_glasses.jpg", photos / "obama.jpg"], out, landmarker_model, hair_model=hair_model)
    stored = load_faceset(out).masks
    old = load_faceset(_without_masks(out, tmp_path / "v1"), hair_model=hair_model)
    assert old.masks.shape == stored.shape
    # The same masks, up to the PNG's 8 bits and the points the JSON keeps to 0.01 px.
    assert np.abs(old.masks - stored).max() < 0.02


def test_group_photo_keeps_the_largest_and_says_so(
    photos: Path, landmarker_model: Path, tmp_path: Path
) -> None:
    report = build_faceset([photos / "two_people.jpg"], tmp_path / "set", landmarker_model)
    assert len(report.kept) == 1
    assert report.notes == ["2 faces in two_people.jpg: used the largest."]
    assert "2 faces in two_people.jpg: used the largest" in report.summary()


def test_dog_is_no_face(photos: Path, landmarker_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    with pytest.raises(NoFaceFound) as info:
        build_faceset([photos / "dog_no_human_face.jpg"], out, landmarker_model)
    assert "dog_no_human_face.jpg" in info.value.user_text()
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def test_painting_does_not_crash(photos: Path, landmarker_model: Path, tmp_path: Path) -> None:
    try:
        report = build_faceset([photos / "painting_mona_lisa.jpg"], tmp_path / "set", landmarker_model)
    except NoFaceFound:
        return
    assert len(report.kept) == 1  # MediaPipe does see Mona Lisa's face; a painting is a face like any other


def _write_clip(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    from swap_engine.video import VideoWriter

    height, width = frames[0].shape[:2]
    with VideoWriter(path, width, height, fps) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def _audio_only(path: Path) -> Path:
    from swap_engine.ffmpeg_bin import find_ffmpeg

    cmd = [
        find_ffmpeg().ffmpeg,
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=0.5",
        "-c:a",
        "aac",
        str(path),
    ]
    subprocess.run(cmd, check=True, timeout=60)
    return path


def test_bad_inputs_are_rejections_with_reasons(
    photos: Path, landmarker_model: Path, tmp_path: Path, clips: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.jpg").write_text("not a photo\n")
    (bad / "empty.png").write_bytes(b"")
    cut = (photos / "obama.jpg").read_bytes()
    (bad / "cut.jpg").write_bytes(cut[: len(cut) // 4])
    movie = (clips / "tiny_man_noaudio.mp4").read_bytes()
    (bad / "cut.mp4").write_bytes(movie[: len(movie) // 2])
    big = photos / "biden.jpg"  # 970 x 2204 px: over the 1.5 megapixel limit set below
    grey = _write_clip(bad / "grey.mp4", [np.full((64, 64, 3), 120, np.uint8)] * 5)
    sound = _audio_only(bad / "sound.m4a")
    twice = bad / "obama_again.jpg"
    shutil.copyfile(photos / "obama.jpg", twice)
    inputs = [photos / "obama.jpg"] + [bad / n for n in ("notes.jpg", "empty.png", "cut.jpg", "cut.mp4")]
    inputs += [big, grey, sound, twice]
    report = build_faceset(inputs, tmp_path / "set", landmarker_model, max_image_pixels=1_500_000)
    assert [r.source for r in report.kept] == ["obama.jpg"]
    reasons = {(r.source, r.reason) for r in report.rejected}
    assert {
        (n, UNREADABLE) for n in ("notes.jpg", "empty.png", "cut.jpg", "cut.mp4", "biden.jpg", "sound.m4a")
    } <= reasons
    assert ("grey.mp4", NO_FACE) in reasons and ("obama_again.jpg", DUPLICATE) in reasons
    details = {r.source: r.detail for r in report.rejected if r.frame is None}
    assert "970x2204" in details["biden.jpg"] and "truncated" in details["cut.jpg"]
    print(report.summary())
    assert "rejected" in report.summary()
    # With no good input at all: NoFaceFound, listing each input's reason.
    with pytest.raises(NoFaceFound) as info:
        build_faceset(inputs[1:-1], tmp_path / "none", landmarker_model, max_image_pixels=1_500_000)
    text = info.value.user_text()
    print(text)
    for name in ("notes.jpg", "empty.png", "cut.jpg", "cut.mp4", "biden.jpg", "grey.mp4", "sound.m4a"):
        assert name in text
    assert not (tmp_path / "none").exists()


def test_out_dir_must_be_fresh(photos: Path, landmarker_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(FileExistsError):
        build_faceset([photos / "obama.jpg"], out, landmarker_model)
    (out / "old.txt").unlink()
    assert len(build_faceset([photos / "obama.jpg"], out, landmarker_model).kept) == 1  # empty is fine


@pytest.fixture(scope="module")
def selfie_6s(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from swap_engine.video import read_frames

    # The first 6 s, every other frame, as a 15 fps clip: the same faces at half the encoding and decoding.
    frames = list(
        itertools.islice(read_frames(clips / "selfie_woman_expressive.mp4", max_frames=180), 0, 180, 2)
    )
    return _write_clip(tmp_path_factory.mktemp("clip") / "selfie_6s.mp4", frames, fps=15)


def test_selfie_video_keeps_a_diverse_subset(selfie_6s: Path, landmarker_model: Path, tmp_path: Path) -> None:
    progress: list[float] = []
    report = build_faceset(
        [selfie_6s], tmp_path / "set", landmarker_model, max_video_frames=45,
        on_progress=lambda fraction, what: progress.append(fraction),
    )  # fmt: skip
    sampled = len(report.kept) + len(report.rejected)
    similar = sum(r.reason == SIMILAR for r in report.rejected)
    yaw = np.array([r.yaw for r in report.kept])
    pitch = np.array([r.pitch for r in report.kept])
    jaw = np.array([r.blendshapes[25] for r in report.kept])  # jawOpen
    print(
        f"selfie first 6 s: {sampled} frames sampled, {len(report.kept)} kept, {similar} similar skipped, "
        f"{sum(r.reason == BLURRY for r in report.rejected)} blurry; yaw {yaw.min():.1f}..{yaw.max():.1f} "
        f"(sd {yaw.std():.1f}), pitch {pitch.min():.1f}..{pitch.max():.1f} (sd {pitch.std():.1f}), "
        f"jawOpen {jaw.min():.2f}..{jaw.max():.2f}\n{report.summary()}"
    )
    assert sampled == 45
    assert 10 <= len(report.kept) < 40 and similar >= 10
    assert jaw.max() - jaw.min() > 0.3  # open and closed mouths both kept
    frames = [r.frame for r in report.kept]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)
    assert progress and progress == sorted(progress)
    assert report.summary().startswith(f"{len(report.kept)} faces kept from 1 video (")


def test_filters_small_blurry_and_turned_faces(photos: Path, landmarker_model: Path, tmp_path: Path) -> None:
    from PIL import Image, ImageFilter

    portrait = Image.open(photos / "obama.jpg")
    portrait.filter(ImageFilter.GaussianBlur(6)).save(tmp_path / "obama_blurred.png")
    portrait.resize((portrait.width // 6, portrait.height // 6)).save(
        tmp_path / "obama_tiny.png"
    )  # ~45 px face
    names = ["obama.jpg", "biden.jpg", "man_curly_glasses.jpg", "painting_mona_lisa.jpg"]
    inputs = [photos / n for n in names] + [tmp_path / "obama_blurred.png", tmp_path / "obama_tiny.png"]
    # Mona Lisa looks about 18° to the side and 19° down: "extreme" under a strict limit of 14°.
    report = build_faceset(
        inputs, tmp_path / "set", landmarker_model, min_face_px=64, max_yaw=14, max_pitch=14
    )
    why = {r.source: r.reason for r in report.rejected}
    assert why == {
        "obama_blurred.png": BLURRY,
        "obama_tiny.png": TOO_SMALL,
        "painting_mona_lisa.jpg": EXTREME_POSE,
    }
    assert [r.source for r in report.kept] == names[:3]
    summary = report.summary()
    assert "3 rejected: " in summary and all(
        f"1 {reason}" in summary for reason in (BLURRY, TOO_SMALL, EXTREME_POSE)
    )
