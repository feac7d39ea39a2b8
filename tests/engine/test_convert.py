"""swap_engine.convert on a real clip: a 1 s cut of selfie_man.mp4 (with its sound), a tiny bank trained for seconds.

The clip is cut short and small inside the test, and six of its frames have the face painted over (no face there).
One conversion is shared by most tests (module fixture); `VideoWriter.write` is wrapped to keep the exact frames
handed to the encoder, so "untouched" is checked bit for bit before H.264, and with a tolerance after it.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from swap_engine import align, label, pipeline, video
from swap_engine.convert import ConvertOptions, ConvertReport, FrameSwapper, convert_clip, skip_reason
from swap_engine.ffmpeg_bin import find_ffmpeg
from swap_engine.landmarks import Face
from swap_engine.model import FaceBank, ModelConfig
from swap_engine.track import ClipScan, Track
from swap_engine.train import TrainConfig, Trainer, make_trainset

# A 64 px model with a mask, a few hundred times cheaper than "lite": conversion does not care how good it is.
TINY = ModelConfig(
    name="tiny", size=64, enc_channels=(16, 32, 64), latent=64, dense_channels=32, enc_upscale=32,
    dec_channels=(16, 8), learn_mask=True,
)  # fmt: skip

SIDE = 160  # the test clips are scaled to SIDE x SIDE
FRAMES = 30
HIDDEN = range(12, 18)  # frames whose face is painted over: no face there
HIDE_BOX = (40, 44, 122, 150)  # x0, y0, x1, y1 in the 160 px frame: selfie_man's face (small enough: no scene cut)


def cut_clip(
    src: Path, dst: Path, frames: int, size: tuple[int, int] | None = None, hide: range = range(0)
) -> Path:
    """The first ``frames`` frames of ``src`` (scaled to ``size``) with its audio; ``hide`` frames get HIDE_BOX
    filled with the frame's median colour."""
    info = video.probe(src)
    w, h = size or info.size
    with video.VideoWriter(dst, w, h, info.fps, audio_from=src if info.has_audio else None) as writer:
        for i, frame in enumerate(video.read_frames(src, max_frames=frames, size=size)):
            if i in hide:
                x0, y0, x1, y1 = HIDE_BOX
                frame[y0:y1, x0:x1] = np.median(frame.reshape(-1, 3), axis=0).astype(np.uint8)
            writer.write(frame)
    return dst


def train_tiny_bank(faces: dict[str, Path], work: Path, seconds: float = 3.0) -> FaceBank:
    """A TINY bank trained for a few seconds on the actor .npz files given (identity → faces)."""
    bank = FaceBank(TINY)
    names = list(faces)
    bank.add_identity(names[0])
    for name in names[1:]:
        bank.add_identity(name, init_from=names[0])
    data = {name: _trainset(pipeline.load_faces(path), TINY.out_size) for name, path in faces.items()}
    cfg = TrainConfig(
        batch=8, budget_seconds=seconds, max_steps=60, device="cpu", checkpoint_every_s=None,
        preview_every_s=None, plateau_patience=None,
    )  # fmt: skip
    Trainer(bank, data, cfg, work / "train.ckpt").run()
    return bank


class Capture:
    """Wraps VideoWriter.write to keep a copy of every frame written (the frames before H.264)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.frames: list[np.ndarray] = []
        original = video.VideoWriter.write

        def write(writer: video.VideoWriter, frame: np.ndarray) -> None:
            self.frames.append(frame.copy())
            original(writer, frame)

        monkeypatch.setattr(video.VideoWriter, "write", write)


def audio_seconds(path: Path) -> float:
    """Length of a file's first audio stream, by decoding it to 8 kHz mono PCM and counting the samples."""
    pcm = subprocess.run(
        [find_ffmpeg().ffmpeg, "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le", "-ac", "1",
         "-ar", "8000", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return len(pcm) / 2 / 8000


def face_zone(box: tuple[float, float, float, float], shape: tuple[int, ...], grow: float = 0.2) -> np.ndarray:
    """Boolean (H, W): the face's landmark box grown by ``grow`` of its size on every side, plus 3 px."""
    x0, y0, x1, y1 = box
    gx, gy = (x1 - x0) * grow + 3, (y1 - y0) * grow + 3
    zone = np.zeros(shape[:2], bool)
    zone[max(0, int(y0 - gy)) : int(np.ceil(y1 + gy)), max(0, int(x0 - gx)) : int(np.ceil(x1 + gx))] = True
    return zone


def label_zone(shape: tuple[int, ...]) -> np.ndarray:
    x0, y0, x1, y1 = label.label_region(shape[1], shape[0])
    zone = np.zeros(shape[:2], bool)
    zone[y0:y1, x0:x1] = True
    return zone


@pytest.fixture(scope="module")
def conv(clips: Path, landmarker_model: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on a shared CPU: one thread is as fast and steadier
    work = tmp_path_factory.mktemp("convert")
    clip = cut_clip(clips / "selfie_man.mp4", work / "clip.mp4", FRAMES, (SIDE, SIDE), HIDDEN)
    scan = pipeline.scan_video(clip, landmarker_model)
    person_clip = cut_clip(clips / "selfie_woman_short.mp4", work / "person.mp4", 12, (SIDE, SIDE))
    person_scan = pipeline.scan_video(person_clip, landmarker_model)
    faces = {
        "actor": pipeline.extract_actor(clip, scan, 0, work / "actor.npz"),
        "person": pipeline.extract_actor(person_clip, person_scan, 0, work / "person.npz"),
    }
    bank = train_tiny_bank(faces, work)
    out = work / "out" / "swapped.mp4"
    with pytest.MonkeyPatch.context() as mp:
        capture = Capture(mp)
        report = convert_clip(
            clip, bank, scan, out, ConvertOptions(identity="person", batch=8),
            comparison_path=out.with_name("compare.gif"),
        )  # fmt: skip
    yield SimpleNamespace(
        work=work, clip=clip, scan=scan, bank=bank, out=out, report=report, written=capture.frames,
        source=list(video.read_frames(clip)), decoded=list(video.read_frames(out)),
    )  # fmt: skip
    torch.set_num_threads(threads)


def test_the_clip_has_one_track_with_a_gap(conv: SimpleNamespace) -> None:
    # The premise of the pass-through tests: the painted frames have no face and do not split the track.
    assert len(conv.scan.tracks) == 1 and not conv.scan.cuts
    seen = set(conv.scan.track(0).faces)
    assert seen.isdisjoint(HIDDEN) and len(seen) >= FRAMES - len(HIDDEN) - 2


def test_output_keeps_frame_count_fps_and_audio(conv: SimpleNamespace) -> None:
    src = video.probe(conv.clip, count_frames=True)
    out = video.probe(conv.out, count_frames=True)
    assert out.frame_count == src.frame_count == FRAMES
    assert out.fps == src.fps and out.size == src.size
    assert src.has_audio and out.has_audio and out.audio_codec == "aac"
    assert abs(out.duration - src.duration) < 1.5 / float(src.fps)
    assert len(conv.decoded) == len(conv.written) == FRAMES
    # The sound lasts as long as the frames written (the writer cuts it to the video), within an AAC frame.
    assert abs(audio_seconds(conv.out) - FRAMES / float(src.fps)) < 0.05
    r: ConvertReport = conv.report
    assert (r.frames, r.fps, r.has_audio, r.track, r.tracks) == (FRAMES, str(src.fps), True, 0, 1)


def test_only_the_face_and_the_label_change(conv: SimpleNamespace) -> None:
    """Bit for bit before encoding: every pixel that differs from the labelled input is in the face's zone."""
    track = conv.scan.track(0)
    changed_inside = []
    for i, (src, out) in enumerate(zip(conv.source, conv.written, strict=True)):
        diff = np.any(out != label.draw_label(src), axis=2)
        face = track.faces.get(i)
        if face is None:
            assert not diff.any(), f"frame {i} has no face but changed"
            continue
        assert not (diff & ~face_zone(face.box, src.shape)).any(), f"frame {i} changed outside the face"
        x0, y0, x1, y1 = (int(v) for v in face.box)
        inner = np.abs(out[y0:y1, x0:x1].astype(int) - src[y0:y1, x0:x1].astype(int)).mean()
        changed_inside.append(inner)
    assert min(changed_inside) > 2.0, "the face was not replaced"


def test_decoded_output_matches_the_input_away_from_the_face(conv: SimpleNamespace) -> None:
    """After H.264 (the input was H.264 too) the rest of the frame is the input within compression noise
    (measured: mean 1.5, 99th percentile 7 levels; the swapped face differs by 9+ on average)."""
    track = conv.scan.track(0)
    for i, (src, out) in enumerate(zip(conv.source, conv.decoded, strict=True)):
        keep = ~label_zone(src.shape)
        if i in track.faces:
            keep &= ~face_zone(track.faces[i].box, src.shape, grow=0.3)
        err = np.abs(out.astype(int) - src.astype(int))[keep]
        assert err.mean() < 2.5 and np.percentile(err, 99) < 12, (i, err.mean(), np.percentile(err, 99))


def test_frames_without_a_face_pass_through(conv: SimpleNamespace) -> None:
    for i in HIDDEN:
        assert np.array_equal(conv.written[i], label.draw_label(conv.source[i]))
        err = np.abs(conv.decoded[i].astype(int) - conv.source[i].astype(int))[~label_zone(conv.source[i].shape)]
        assert err.mean() < 2.5 and np.percentile(err, 99) < 12  # H.264 noise only (measured: mean 1.5, p99 7)
    swapped = len(conv.scan.track(0).faces)
    assert conv.report.swapped == swapped
    assert conv.report.skipped == {"no face": FRAMES - swapped}


def test_every_frame_is_labelled_and_the_file_says_synthetic(conv: SimpleNamespace) -> None:
    zone = label_zone(conv.source[0].shape)
    for src, written, decoded in zip(conv.source, conv.written, conv.decoded, strict=True):
        assert np.abs(written[zone].astype(int) - src[zone].astype(int)).mean() > 20
        assert np.abs(decoded[zone].astype(int) - src[zone].astype(int)).mean() > 15
    tags = video.probe(conv.out).tags
    assert tags.get("synthetic") == "true" and tags.get("generator") == "famswap"
    assert "synthetic" in tags.get("comment", "").lower()


def test_report_and_comparison(conv: SimpleNamespace) -> None:
    data = json.loads(conv.report.to_json())
    assert data["output"] == str(conv.out) and data["bytes"] == conv.out.stat().st_size and not data["fitted"]
    assert {"decode", "align", "model", "blend", "label", "encode", "total"} <= set(data["timings"])
    gif = Path(data["comparison"])
    assert gif.is_file() and gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a")


def test_output_is_fitted_to_a_byte_limit(conv: SimpleNamespace, clips: Path) -> None:
    # A 1 s clip at 160 px is already below the smallest budget fit_to_size allows; use the same clip at 320 px
    # (the scan's points scaled with it) so a re-encode is needed and possible.
    big = cut_clip(clips / "selfie_man.mp4", conv.work / "big.mp4", FRAMES, (2 * SIDE, 2 * SIDE))
    faces = {i: Face(f.points * 2, None, None, f.pose) for i, f in conv.scan.track(0).faces.items()}
    scan = ClipScan([Track(0, faces)], FRAMES, frozenset(), 2 * SIDE, 2 * SIDE)
    limit = 16_000
    out = conv.work / "fitted" / "small.mp4"
    report = convert_clip(big, conv.bank, scan, out, ConvertOptions(identity="person", max_bytes=limit))
    info = video.probe(out, count_frames=True)
    assert report.fitted and report.bytes == out.stat().st_size <= limit
    assert info.frame_count == FRAMES and info.has_audio and info.tags.get("synthetic") == "true"
    assert not out.with_name("small.raw.mp4").exists()


@pytest.mark.parametrize(("colour", "blend"), [("histogram", "poisson"), ("none", "alpha")])
def test_other_colour_and_blend_options_stay_inside_the_face(conv: SimpleNamespace, colour: str, blend: str) -> None:
    opts = ConvertOptions(identity="person", color=colour, blend=blend)
    swapper = FrameSwapper(conv.bank, opts, 30.0, align.DEFAULT_COVERAGE)
    track = conv.scan.track(0)
    pending = [swapper.prepare(i, conv.source[i].copy(), track.faces.get(i)) for i in range(8)]
    for i, out in enumerate(swapper.finish(pending)):
        diff = np.any(out != conv.source[i], axis=2)
        zone = face_zone(track.faces[i].box, out.shape)
        assert diff.any() and not (diff & ~zone).any()


def test_landmark_smoothing_steadies_the_crop(conv: SimpleNamespace) -> None:
    """A still face with detector jitter: the smoothed crop moves far less than one aligned on the raw points."""
    face = conv.scan.track(0).faces[0]
    swapper = FrameSwapper(SimpleNamespace(cfg=TINY), ConvertOptions(identity="person"), 30.0, 1.25)
    rng = np.random.default_rng(0)
    frame = conv.source[0]
    raw, smoothed = [], []
    for i in range(30):
        jittered = SimpleNamespace(points=face.points + rng.normal(0, 1.0, face.points.shape).astype(np.float32),
                                   size=face.size, yaw=0.0)  # fmt: skip
        raw.append(align.align_matrix(jittered.points.astype(np.float64), TINY.size)[:, 2])
        smoothed.append(swapper.prepare(i, frame, jittered).matrix[:, 2])
    raw_step = np.abs(np.diff(raw, axis=0)).mean()
    smooth_step = np.abs(np.diff(smoothed[5:], axis=0)).mean()
    assert smooth_step < 0.4 * raw_step
    # After the face has been gone for a while the filter starts afresh (no drift from where it was).
    after = swapper.prepare(40, frame, face)
    assert np.allclose(after.matrix, align.align_matrix(face.points.astype(np.float64), TINY.size))


def test_sharpening_brings_out_features_and_can_be_turned_off() -> None:
    # A soft blob on a flat face, as a briefly trained decoder draws an eye.
    face = np.full((64, 64, 3), 150, np.uint8)
    cv2.circle(face, (32, 32), 6, (60, 50, 40), -1)
    faces = np.stack([cv2.GaussianBlur(face, (0, 0), 2.0)] * 2)
    on = FrameSwapper(SimpleNamespace(cfg=TINY), ConvertOptions(identity="x"), 30.0, 1.25).sharpen(faces)
    off = FrameSwapper(SimpleNamespace(cfg=TINY), ConvertOptions(identity="x", sharpen=0), 30.0, 1.25).sharpen(faces)
    assert off is faces
    assert on.shape == faces.shape and on.dtype == np.uint8

    def detail(img: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())

    assert detail(on[0]) > 1.5 * detail(faces[0])
    assert abs(float(on.mean()) - float(faces.mean())) < 1.0  # sharper, not brighter or darker
    assert np.array_equal(on[0, :5, :5], faces[0, :5, :5])  # flat areas stay as they are


def test_skip_reasons() -> None:
    opts = ConvertOptions(identity="x")
    assert skip_reason(None, opts) == "no face"
    assert skip_reason(SimpleNamespace(size=10.0, yaw=0.0), opts) == "face too small"
    assert skip_reason(SimpleNamespace(size=100.0, yaw=-85.0), opts) == "face turned away"
    assert skip_reason(SimpleNamespace(size=100.0, yaw=float("nan")), opts) is None
    assert skip_reason(SimpleNamespace(size=100.0, yaw=30.0), opts) is None


def _trainset(faces: tuple[np.ndarray, np.ndarray, np.ndarray], size: int) -> object:
    crops, points, masks = faces
    return make_trainset(crops, points, size, masks=masks)


@pytest.fixture(scope="module")
def curly(photos: Path, landmarker_model: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A 4-frame clip of man_curly_glasses.jpg (curls down to his brows) and its scan."""
    from swap_engine.media import load_image

    work = tmp_path_factory.mktemp("curly")
    image = cv2.resize(load_image(photos / "man_curly_glasses.jpg", max_pixels=10**8), (320, 320),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
    clip = work / "curly.mp4"
    with video.VideoWriter(clip, 320, 320, 25) as writer:
        for _ in range(4):
            writer.write(image)
    return SimpleNamespace(work=work, clip=clip, scan=pipeline.scan_video(clip, landmarker_model))


@pytest.fixture(scope="module")
def person_faceset(clips: Path, landmarker_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small face set of the person (selfie_woman_short.mp4, 12 frames), as enrollment makes it."""
    from swap_engine.faceset import build_faceset

    work = tmp_path_factory.mktemp("person-set")
    clip = cut_clip(clips / "selfie_woman_short.mp4", work / "person.mp4", 12, (320, 320))
    build_faceset([clip], work / "set", landmarker_model)
    return work / "set"


def _convert_frames(curly: SimpleNamespace, opts: ConvertOptions, name: str) -> list[np.ndarray]:
    torch.manual_seed(0)
    bank = FaceBank(TINY, ["person"])  # untrained: it draws a blur, and its mask is about 0.5 everywhere
    with pytest.MonkeyPatch.context() as mp:
        capture = Capture(mp)
        convert_clip(curly.clip, bank, curly.scan, curly.work / f"{name}.mp4", opts)
    return capture.frames


def test_overlapping_the_work_does_not_change_a_frame(conv: SimpleNamespace, hair_model: Path, tmp_path: Path) -> None:
    # convert_clip segments hair on three threads, runs ahead of the model by a batch, pastes faces on three threads
    # and writes from a thread of its own; the same work one frame after another (prepare waits for each hair map,
    # one blend thread) gives the same pixels.
    opts = ConvertOptions(identity="person", hair_model=hair_model, batch=4, hair_threads=3, blend_threads=3)
    with pytest.MonkeyPatch.context() as mp:
        capture = Capture(mp)
        convert_clip(conv.clip, conv.bank, conv.scan, tmp_path / "overlapped.mp4", opts)

    serial = ConvertOptions(identity="person", hair_model=hair_model, batch=4, hair_threads=1, blend_threads=1)
    swapper = FrameSwapper(conv.bank, serial, 30.0, align.DEFAULT_COVERAGE)
    renderer = label.LabelRenderer(SIDE, SIDE, opts.label_style)
    track, expected, batch = conv.scan.track(0), [], []
    for i, frame in enumerate(video.read_frames(conv.clip)):
        if i in conv.scan.cuts:
            swapper.reset()
        face = track.faces.get(i)
        batch.append(swapper.prepare(i, frame, None if skip_reason(face, serial) else face))
        if sum(p.crop is not None for p in batch) >= 4 or i == FRAMES - 1:
            expected += [renderer.apply(f) for f in swapper.finish(batch)]
            batch = []
    swapper.close()
    assert len(capture.frames) == len(expected) == FRAMES
    for i, (got, want) in enumerate(zip(capture.frames, expected, strict=True)):
        assert np.array_equal(got, want), f"frame {i} differs"


def test_an_encoder_failure_stops_conversion_with_its_error(
    conv: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from common.errors import EncodeError

    original = video.VideoWriter.write

    def write(writer: video.VideoWriter, frame: np.ndarray) -> None:
        if writer.frames_written == 5:
            raise EncodeError("ffmpeg stopped while encoding (disk full).")
        original(writer, frame)

    monkeypatch.setattr(video.VideoWriter, "write", write)
    with pytest.raises(EncodeError, match="disk full"):
        convert_clip(conv.clip, conv.bank, conv.scan, tmp_path / "x.mp4", ConvertOptions(identity="person", batch=4))
    assert not (tmp_path / "x.mp4").exists()


def test_the_actors_hair_stays_in_front_of_the_swapped_face(
    curly: SimpleNamespace, hair_model: Path, person_faceset: Path
) -> None:
    from swap_engine.segment import HairSegmenter

    originals = list(video.read_frames(curly.clip))
    face = curly.scan.track(0).faces[0]
    # Hair as the segmenter sees it in an aligned 256 px view of the face (as conversion asks it), in frame pixels.
    to_crop = align.align_matrix(face.points, 256)
    with HairSegmenter(hair_model) as segmenter:
        hair_crop = segmenter.hair(align.warp_crop(originals[0], to_crop, 256))
    height, width = originals[0].shape[:2]
    hair = cv2.warpAffine(hair_crop, to_crop, (width, height), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR) > 0.9
    near_face = face_zone(curly.scan.track(0).faces[0].box, originals[0].shape, grow=0.1) & ~label_zone(
        originals[0].shape
    )
    # Eyes, nose and mouth are always the face's (segment.inner_face), even where the segmenter sees hair.
    from swap_engine.segment import inner_face

    # (grown by the few pixels the final feather spreads past its edge)
    core = cv2.dilate(inner_face(face.points, originals[0].shape[0]), np.ones((15, 15), np.uint8)) > 0
    curls = hair & near_face & ~core
    assert curls.sum() > 500  # his curls reach into the face's box
    with_hair = _convert_frames(curly, ConvertOptions(identity="person", hair_model=hair_model), "hair")
    without = _convert_frames(curly, ConvertOptions(identity="person"), "plain")
    # The person's own detail (from their face set) is laid on the drawn face, never past the actor's mask.
    detailed = _convert_frames(curly, ConvertOptions(identity="person", hair_model=hair_model, person_detail=1.0,
                                                     faceset=person_faceset), "detail")  # fmt: skip
    for original, swapped, plain, more in zip(originals, with_hair, without, detailed, strict=True):
        changed = np.any(swapped != original, axis=2)
        assert changed[near_face].mean() > 0.1  # the face was swapped ...
        assert not changed[curls].any()  # ... and not one hair pixel changed
        assert not np.any(more != original, axis=2)[curls].any()
        # Without the hair model the landmark hull (cut at the brows) still takes some curls: the test can fail.
        assert np.any(plain != original, axis=2)[curls].any()


def test_keep_mouth_leaves_the_mouth_opening_alone() -> None:
    from swap_engine.convert import mouth_mask
    from swap_engine.landmarks import LIPS_INNER

    points = np.zeros((478, 2), np.float32)
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
                     np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False))], 1)  # fmt: skip
    points[list(LIPS_INNER)] = 64 + ring * np.array([20, 8])  # an open mouth
    opened = mouth_mask(points, 128)
    assert opened[64, 64] == 1 and opened[64, 84 + 3] == 0 and opened[10, 10] == 0
    points[list(LIPS_INNER)] = 64 + ring * np.array([20, 0])  # closed: a line
    assert mouth_mask(points, 128).sum() < 0.01 * 128 * 128


def test_pose_weight_fades_past_the_enrolled_range_and_never_pops() -> None:
    from swap_engine.pose_fade import FadeFilter, PoseRange

    frontal = PoseRange(-5.0, 8.0, -6.0, 6.0)  # mirrored: yaw -8..8 is covered
    assert frontal.weight(0.0, 0.0) == 1.0 and frontal.weight(-8.0, 0.0) == 1.0
    assert frontal.weight(8.0 + 10.0, 0.0) == 1.0  # a little extrapolation is fine
    assert 0.0 < frontal.weight(8.0 + 20.0, 0.0) < 1.0
    assert frontal.weight(-(8.0 + 30.0), 0.0) == 0.0 and frontal.weight(0.0, 40.0) == 0.0
    assert frontal.weight(float("nan"), 0.0) == 1.0
    assert PoseRange(-5.0, 8.0, -6.0, 6.0, mirrored=False).weight(-20.0, 0.0) < 1.0
    weights = [frontal.weight(yaw, 0.0) for yaw in np.linspace(0, 60, 40)]
    fade = FadeFilter(max_step=0.1)
    shown = [fade(w) for w in [1.0] + weights + [1.0] * 5 + [0.0]]
    assert max(abs(a - b) for a, b in zip(shown, shown[1:], strict=False)) <= 0.1 + 1e-9
    fade.reset()
    assert fade(0.0) == 0.0  # after a cut it may jump


def test_turned_heads_fade_out_and_the_report_says_how_to_fix_it(conv: SimpleNamespace, tmp_path: Path) -> None:
    from swap_engine.pose_fade import ADVICE, PoseRange

    # A person enrolled only in poses far from this actor's: every swapped frame fades to nothing.
    far = PoseRange(60.0, 70.0, 30.0, 40.0, mirrored=False)
    with pytest.MonkeyPatch.context() as mp:
        capture = Capture(mp)
        report = convert_clip(conv.clip, conv.bank, conv.scan, tmp_path / "far.mp4",
                              ConvertOptions(identity="person", batch=8, pose_range=far))  # fmt: skip
    assert report.faded == report.swapped > 0
    assert any(ADVICE in note for note in report.notes)
    originals = list(video.read_frames(conv.clip))
    for original, frame in zip(originals, capture.frames, strict=True):
        assert not np.any(frame != original, axis=2)[~label_zone(frame.shape)].any()


def test_conversion_caps_the_colour_gain_and_detail_is_off_by_default(conv: SimpleNamespace) -> None:
    from swap_engine.convert import COLOUR_MAX_GAIN, skin_weight

    opts = ConvertOptions(identity="person")
    swapper = FrameSwapper(conv.bank, opts, 30.0, align.DEFAULT_COVERAGE)
    assert swapper.colour is not None and swapper.colour.max_gain == COLOUR_MAX_GAIN <= 1.5
    assert opts.detail == 0 and not opts.keep_mouth and not opts.learned_mask  # measured: docs/QUALITY.md
    face = conv.scan.track(0).faces[0]
    points = align.transform_points(face.points, align.align_matrix(face.points, 128))
    weight = skin_weight(points, 128)
    x, y = np.round(points[[468, 473, 13, 4]]).astype(int).T  # irises, upper lip, nose tip: no actor detail
    assert weight[y, x].max() < 0.05
    cheek = np.round(points[[50, 280]]).astype(int)  # cheeks: the actor's fine detail may show
    assert weight[cheek[:, 1], cheek[:, 0]].min() > 0.9


def test_detail_above_the_models_resolution_adds_only_what_the_model_cannot_draw() -> None:
    side = 4 * TINY.size  # blended at 4x the model's side, as a face pasted over ~250 px is
    yy, xx = np.mgrid[0:side, 0:side]
    # Shading and an 8-model-px pattern (eye sized): both drawable at the model's size, so the decoder's to draw.
    smooth = (100 + 40 * np.sin(xx / side * np.pi) + 20 * np.sin(yy / 32 * 2 * np.pi))[..., None].repeat(3, 2)
    fine = 30 * (((xx + yy) % 2) * 2 - 1)[..., None].repeat(3, 2)  # a 1-px checkerboard: far beyond it
    crops = np.stack([np.clip(smooth + fine, 0, 255).astype(np.uint8)])
    faces = np.full_like(crops, 120)
    opts = ConvertOptions(identity="x", crop_px=side, detail=1.0, detail_sigma=0.0, detail_keeps="face")
    swapper = FrameSwapper(SimpleNamespace(cfg=TINY), opts, 30.0, 1.25)
    out = swapper.add_detail(faces, crops, [None]).astype(np.float64) - 120
    inner = (slice(8, -8), slice(8, -8))  # away from the resize's border effects
    assert np.corrcoef(out[0][inner].ravel(), fine[inner].ravel())[0, 1] > 0.9  # the checkerboard comes through…
    assert np.abs(out[0][inner] - fine[inner]).mean() < 1.5  # …but hardly any of the shading or the pattern
    blurred = replace(opts, detail_sigma=1.0)  # a Gaussian's high-pass also passes some of the pattern
    wide = FrameSwapper(SimpleNamespace(cfg=TINY), blurred, 30.0, 1.25).add_detail(faces, crops, [None])
    assert np.abs(wide[0].astype(np.float64)[inner] - 120 - fine[inner]).mean() > 2.5


def test_a_larger_blend_crop_keeps_the_models_input_and_the_faces_place(conv: SimpleNamespace) -> None:
    track = conv.scan.track(0)
    frame = conv.source[0]
    small = FrameSwapper(conv.bank, ConvertOptions(identity="person"), 30.0, align.DEFAULT_COVERAGE)
    large = FrameSwapper(conv.bank, ConvertOptions(identity="person", crop_px=256), 30.0, align.DEFAULT_COVERAGE)
    a, b = small.prepare(0, frame.copy(), track.faces[0]), large.prepare(0, frame.copy(), track.faces[0])
    assert a.model_crop is None and b.crop is not None and b.crop.shape == (256, 256, 3)
    assert np.array_equal(b.model_crop, a.crop)  # the encoder reads the face exactly as at the model's size
    # A spot the decoder draws at (20, 30) of its 64 px face lands where (20, 30) of that crop is in the frame:
    # (80, 120) of the 256 px crop, not half a pixel of the small crop off (a centre-aligned resize: 81.5, 121.5).
    face = np.zeros((1, 64, 64), np.float32)
    face[0, 30, 20] = 1.0
    face = cv2.GaussianBlur(face[0], (0, 0), 1.5)[None]
    up = align.rescale_crops(face, 256)[0]
    yy, xx = np.mgrid[0:256, 0:256]
    assert abs((up * xx).sum() / up.sum() - 80) < 0.3 and abs((up * yy).sum() / up.sum() - 120) < 0.3
    out = large.finish([b])[0]
    assert np.any(out != frame)


def test_a_decoder_that_draws_twice_its_input_reads_the_face_at_its_input_size(conv: SimpleNamespace) -> None:
    bank = FaceBank(replace(TINY, out_scale=2), ["person"])  # the hires layout: reads 64 px, draws 128
    swapper = FrameSwapper(bank, ConvertOptions(identity="person"), 30.0, align.DEFAULT_COVERAGE)
    track = conv.scan.track(0)
    pending = swapper.prepare(0, conv.source[0].copy(), track.faces[0])
    assert pending.crop is not None and pending.crop.shape == (128, 128, 3)
    assert pending.model_crop is not None and pending.model_crop.shape == (64, 64, 3)
    out = swapper.finish([pending])[0]
    diff = np.any(out != conv.source[0], axis=2)
    assert diff.any() and not (diff & ~face_zone(track.faces[0].box, out.shape)).any()


def test_the_persons_own_detail_draws_on_a_blurred_face_and_nothing_else(
    curly: SimpleNamespace, person_faceset: Path
) -> None:
    # An untrained decoder draws a blur; the person's detail gives it structure, inside the face only.
    base = ConvertOptions(identity="person", crop_px=256)
    plain = _convert_frames(curly, base, "blur")
    detailed = _convert_frames(curly, replace(base, person_detail=1.0, faceset=person_faceset), "blur-detail")
    face = curly.scan.track(0).faces[0]
    zone = face_zone(face.box, plain[0].shape, grow=0.1)
    x0, y0, x1, y1 = (int(v) for v in face.box)
    for a, b in zip(plain, detailed, strict=True):
        assert np.array_equal(a[~zone], b[~zone])  # outside the face: the same pixels
        inner_a = cv2.Laplacian(cv2.cvtColor(a[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
        inner_b = cv2.Laplacian(cv2.cvtColor(b[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
        assert inner_b > 1.2 * inner_a


def test_an_unreadable_face_set_swaps_without_the_detail(
    curly: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "set"
    broken.mkdir()
    (broken / "faceset.json").write_text("{not json")
    with caplog.at_level("WARNING", logger="swap_engine.convert"):
        frames = _convert_frames(curly, ConvertOptions(identity="person", faceset=broken), "broken-set")
    assert len(frames) == 4
    assert any("could not be read" in r.getMessage() and str(broken) in r.getMessage() for r in caplog.records)
