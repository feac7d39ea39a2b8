"""swap_engine.pipeline stages on real clips: scan → tracks + contact sheet, scan files, the actor's faces, the bank,
and which face a conversion replaces when the clip has several (stage_multi_face.mp4, cut to its opening shot)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from common.errors import NoFaceFound
from swap_engine import label, pipeline, video
from swap_engine.convert import ConvertOptions, convert_clip
from swap_engine.model import FaceBank, load_bank, model_config, save_bank
from swap_engine.track import ClipScan, Track
from swap_engine.train import TrainConfig, Trainer, make_trainset

# The same tiny 64 px model as test_convert: the conversion does not care how well it is trained.
TINY = dict(
    name="tiny", size=64, enc_channels=(16, 32, 64), latent=64, dense_channels=32, enc_upscale=32,
    dec_channels=(16, 8), learn_mask=True,
)  # fmt: skip

STAGE_FRAMES = 24  # the opening wide shot: a singer and a pianist, both small; the close-ups after are profiles


@pytest.fixture(scope="module")
def stage(clips: Path, landmarker_model: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("pipeline")
    src = clips / "stage_multi_face.mp4"
    info = video.probe(src)
    clip = work / "stage.mp4"
    with video.VideoWriter(clip, info.width, info.height, info.fps, audio_from=src) as writer:
        for frame in video.read_frames(src, max_frames=STAGE_FRAMES):
            writer.write(frame)
    scan = pipeline.scan_video(clip, landmarker_model)
    yield SimpleNamespace(work=work, clip=clip, scan=scan)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bank(stage: SimpleNamespace) -> FaceBank:
    """A tiny bank trained a few seconds on the stage clip's two faces (identities "t0" and "t1")."""
    from swap_engine.model import ModelConfig

    faces = {f"t{t}": pipeline.extract_actor(stage.clip, stage.scan, t, stage.work / f"t{t}.npz") for t in (0, 1)}
    cfg = ModelConfig(**TINY)  # type: ignore[arg-type]
    bank = FaceBank(cfg)
    bank.add_identity("t0")
    bank.add_identity("t1", init_from="t0")
    data = {k: make_trainset(*pipeline.load_faces(p)[:2], cfg.out_size, masks=pipeline.load_faces(p)[2]) for k, p in faces.items()}
    train = TrainConfig(
        batch=8, budget_seconds=2.0, max_steps=40, device="cpu", checkpoint_every_s=None, preview_every_s=None,
        plateau_patience=None,
    )  # fmt: skip
    Trainer(bank, data, train, stage.work / "train.ckpt").run()
    return bank


def _zone(box: tuple[float, float, float, float], shape: tuple[int, ...], grow: float = 0.25) -> np.ndarray:
    x0, y0, x1, y1 = box
    gx, gy = (x1 - x0) * grow + 3, (y1 - y0) * grow + 3
    zone = np.zeros(shape[:2], bool)
    zone[max(0, int(y0 - gy)) : int(np.ceil(y1 + gy)), max(0, int(x0 - gx)) : int(np.ceil(x1 + gx))] = True
    return zone


def test_stage_clip_has_several_tracks_main_actor_first(stage: SimpleNamespace) -> None:
    tracks = stage.scan.tracks
    assert len(tracks) >= 2
    assert [t.index for t in tracks] == list(range(len(tracks)))
    assert [t.score for t in tracks] == sorted((t.score for t in tracks), reverse=True)
    assert stage.scan.frame_count == STAGE_FRAMES and (stage.scan.width, stage.scan.height) == (640, 360)
    # Two different people: their faces are far apart in the frame.
    a, b = (t.faces[t.first].box for t in tracks[:2])
    assert abs((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) > 100


def test_contact_sheet_has_a_numbered_tile_per_person(stage: SimpleNamespace) -> None:
    path = pipeline.write_contact_sheet(stage.clip, stage.scan, stage.work / "sheet.jpg")
    sheet = cv2.imread(str(path))
    n = len(stage.scan.people)
    assert n == 2  # the singer and the pianist of the opening shot
    columns = min(4, n)
    assert sheet.shape == (160 * math.ceil(n / columns), 160 * columns, 3)
    for k in range(n):
        r, c = divmod(k, columns)
        tile = sheet[r * 160 + 4 : r * 160 + 156, c * 160 + 4 : c * 160 + 156]
        assert tile.std() > 10  # a picture, not the empty background
        assert tile[2:20, 2:20].mean() > 40  # the white number on its black plate in the corner


def test_scan_file_round_trip(stage: SimpleNamespace, tmp_path: Path) -> None:
    scan = stage.scan
    back = pipeline.load_scan(pipeline.save_scan(scan, tmp_path / "scan.npz"))
    assert (back.frame_count, back.width, back.height, back.cuts) == (
        scan.frame_count, scan.width, scan.height, scan.cuts,
    )  # fmt: skip
    assert len(back.tracks) == len(scan.tracks)
    for t, u in zip(scan.tracks, back.tracks, strict=True):
        assert u.index == t.index and u.frames == t.frames
        for i in t.frames:
            assert np.allclose(u.faces[i].points, t.faces[i].points)
            assert u.faces[i].box == pytest.approx(t.faces[i].box)
            assert u.faces[i].yaw == pytest.approx(t.faces[i].yaw, abs=1e-3)
    assert not list(tmp_path.glob("*.tmp*"))


def test_scan_file_keeps_missing_poses_and_cuts(tmp_path: Path) -> None:
    from swap_engine.landmarks import Face

    pts = np.random.default_rng(0).uniform(50, 150, (478, 2)).astype(np.float32)
    pose = np.eye(4, dtype=np.float32)
    scan = ClipScan(
        [Track(0, {0: Face(pts, None, None, pose), 5: Face(pts + 1, None, None, None)}), Track(1, {3: Face(pts, None, None, None)})],
        12, frozenset({4, 9}), 320, 240,
    )  # fmt: skip
    back = pipeline.load_scan(pipeline.save_scan(scan, tmp_path / "scan.npz"))
    assert back.cuts == {4, 9} and back.frame_count == 12 and (back.width, back.height) == (320, 240)
    assert back.tracks[0].faces[0].pose is not None and back.tracks[0].faces[5].pose is None
    assert math.isnan(back.tracks[1].faces[3].yaw)
    assert np.array_equal(back.tracks[0].faces[5].points, pts + 1)


def test_choosing_track_1_instead_of_0_changes_the_other_face(
    stage: SimpleNamespace, bank: FaceBank, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = list(video.read_frames(stage.clip))
    t0, t1 = stage.scan.tracks[:2]
    written: dict[int, list[np.ndarray]] = {}
    original = video.VideoWriter.write
    for choice, identity in ((0, "t1"), (1, "t0")):
        frames: list[np.ndarray] = []
        written[choice] = frames

        def write(writer: video.VideoWriter, frame: np.ndarray, frames: list[np.ndarray] = frames) -> None:
            frames.append(frame.copy())
            original(writer, frame)

        monkeypatch.setattr(video.VideoWriter, "write", write)
        out = stage.work / f"track{choice}.mp4"
        report = convert_clip(stage.clip, bank, stage.scan, out, ConvertOptions(identity=identity, track=choice))
        assert report.track == choice and report.frames == STAGE_FRAMES
        assert video.probe(out, count_frames=True).frame_count == STAGE_FRAMES
    both = sorted(set(t0.faces) & set(t1.faces))
    assert both
    changed = {0: 0, 1: 0}
    for i in both:
        ref = label.draw_label(source[i])
        zones = {0: _zone(t0.faces[i].box, ref.shape), 1: _zone(t1.faces[i].box, ref.shape)}
        for choice in (0, 1):
            diff = np.any(written[choice][i] != ref, axis=2)
            assert not (diff & ~zones[choice]).any(), f"track {choice}, frame {i}: pixels changed elsewhere"
            changed[choice] += int(diff.any())
            assert not (diff & zones[1 - choice]).any(), f"track {choice}, frame {i}: the other face changed"
    assert changed[0] > 0 and changed[1] > 0


def test_extract_actor_keeps_aligned_crops_and_points(stage: SimpleNamespace) -> None:
    path = pipeline.extract_actor(stage.clip, stage.scan, 0, stage.work / "actor.npz")
    crops, points, masks = pipeline.load_faces(path)
    n = len(stage.scan.track(0).faces)
    assert crops.shape == (n, pipeline.CROP_SIZE, pipeline.CROP_SIZE, 3) and crops.dtype == np.uint8
    assert points.shape == (n, 478, 2)
    assert masks.shape == crops.shape[:3] and masks.dtype == np.float32
    assert masks.min() >= 0 and masks.max() <= 1 and (masks > 0.5).mean() > 0.2  # a face's worth of the crop
    # Aligned: the eyes sit at the same place in every crop.
    eyes = points[:, [33, 263]].mean(axis=1)
    assert eyes.std(axis=0).max() < 6


def test_choose_actor_frames_spreads_over_time_and_keeps_pose_extremes() -> None:
    rng = np.random.default_rng(1)
    faces = {i: SimpleNamespace(yaw=float(rng.normal(0, 10)), pitch=float(rng.normal(0, 5))) for i in range(0, 2000, 2)}
    faces[777 * 2] = SimpleNamespace(yaw=60.0, pitch=0.0)
    faces[13 * 2] = SimpleNamespace(yaw=0.0, pitch=-40.0)
    track = Track(0, faces)  # type: ignore[arg-type]
    chosen = pipeline.choose_actor_frames(track, 100)
    assert len(chosen) <= 100 and chosen == sorted(set(chosen)) and set(chosen) <= set(faces)
    assert 777 * 2 in chosen and 13 * 2 in chosen
    assert chosen[0] == 0 and chosen[-1] == 1998
    assert max(np.diff(chosen)) < 3 * 2000 / 100
    assert pipeline.choose_actor_frames(Track(0, dict(list(faces.items())[:50])), 100) == sorted(faces)[:50]


def test_a_clip_without_faces_is_refused(landmarker_model: Path, tmp_path: Path) -> None:
    clip = tmp_path / "wall.mp4"
    rng = np.random.default_rng(2)
    with video.VideoWriter(clip, 128, 96, 25) as writer:
        for _ in range(8):
            writer.write(cv2.GaussianBlur(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), (0, 0), 3))
    with pytest.raises(NoFaceFound, match="wall.mp4"):
        pipeline.scan_video(clip, landmarker_model)


def test_asking_for_a_track_that_is_not_there(stage: SimpleNamespace) -> None:
    n = len(stage.scan.tracks)
    with pytest.raises(NoFaceFound, match=f"no track {n}") as err:
        stage.scan.track(n)
    assert "famswap tracks" in (err.value.hint or "")


def test_open_bank_adds_missing_identities_from_an_existing_decoder(tmp_path: Path) -> None:
    path = tmp_path / "bank.pt"
    first = pipeline.open_bank(path, "lite", ["anna"])
    assert first.identities == ["anna"]
    save_bank(path, first, {"trained_steps": 7})
    again = pipeline.open_bank(path, "lite", ["anna", "ben"])
    assert sorted(again.identities) == ["anna", "ben"]
    for a, b in zip(again.decoder("anna").parameters(), again.decoder("ben").parameters(), strict=True):
        assert torch.equal(a, b)
    assert load_bank(path)[1]["trained_steps"] == 7
    assert again.cfg == model_config("lite")


def test_open_bank_copies_the_decoder_closest_chooses(tmp_path: Path) -> None:
    path = tmp_path / "bank.pt"
    bank = pipeline.open_bank(path, "lite", ["anna", "ben"])
    with torch.no_grad():
        for p in bank.decoder("ben").parameters():
            p.add_(1.0)  # ben's decoder now differs from anna's
    save_bank(path, bank)
    asked: list[tuple[list[str], str]] = []

    def closest(b: object, identity: str) -> str:
        asked.append((sorted(b.identities), identity))  # type: ignore[attr-defined]
        return "ben"

    again = pipeline.open_bank(path, "lite", ["anna", "ben", "cleo"], closest)
    assert asked == [(["anna", "ben"], "cleo")]
    for a, b in zip(again.decoder("cleo").parameters(), again.decoder("ben").parameters(), strict=True):
        assert torch.equal(a, b)


def test_digest_and_device_helpers(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 3_000_000)
    b.write_bytes(b"x" * 2_999_999 + b"y")
    assert pipeline.file_digest(a) == pipeline.file_digest(a) != pipeline.file_digest(b)
    assert len(pipeline.file_digest(a)) == 16
    assert pipeline.resolve_device("cpu") == "cpu"
    assert pipeline.resolve_device(None) in ("cpu", "cuda")
    assert pipeline.default_model("cpu") == "lite" and pipeline.default_model("cuda:0") == "hires"
