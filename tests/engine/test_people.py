"""People across cuts: a clip made here of three shots (person A, a hard cut to person B, a hard cut back to A) is
found to show two people, A's shots are both swapped in one conversion, and B's frames pass through untouched apart
from the label; on stage_multi_face.mp4 each person is one tile and the wide-to-close cut is found."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from swap_engine import label, pipeline, video
from swap_engine.convert import ConvertOptions, SwapTarget, convert_clip
from swap_engine.model import FaceBank, ModelConfig
from swap_engine.train import TrainConfig, Trainer, make_trainset
from tests.engine.test_pipeline import TINY

SHOT = 20  # frames per shot
SIZE = (192, 192)


def _shot(src: Path, start: float) -> list[np.ndarray]:
    return list(video.read_frames(src, start=start, max_frames=SHOT, size=SIZE))


@pytest.fixture(scope="module")
def three_shots(clips: Path, landmarker_model: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A (selfie_man from 0 s) | B (selfie_woman_short) | A again (selfie_man from 4 s), 30 fps, hard cuts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("people")
    shots = [_shot(clips / "selfie_man.mp4", 0.0), _shot(clips / "selfie_woman_short.mp4", 2.0),
             _shot(clips / "selfie_man.mp4", 4.0)]  # fmt: skip
    clip = work / "three_shots.mp4"
    with video.VideoWriter(clip, *SIZE, 30) as writer:
        for frame in (f for shot in shots for f in shot):
            writer.write(frame)
    source = list(video.read_frames(clip))  # the frames as the conversion decodes them
    scan = pipeline.scan_video(clip, landmarker_model)
    yield SimpleNamespace(work=work, clip=clip, scan=scan, source=source)
    torch.set_num_threads(threads)


def test_three_shots_are_two_people(three_shots: SimpleNamespace) -> None:
    scan = three_shots.scan
    assert scan.cuts == {SHOT, 2 * SHOT}
    assert len(scan.tracks) == 3 and len(scan.people) == 2
    a = next(p for p in scan.people if len(p.tracks) == 2)
    b = next(p for p in scan.people if p is not a)
    assert a.index == 0, "A is on screen longest: the main person"
    assert [(t.first, t.last) for t in a.tracks] == [(0, SHOT - 1), (2 * SHOT, 3 * SHOT - 1)]
    assert (b.tracks[0].first, b.tracks[0].last) == (SHOT, 2 * SHOT - 1)
    # A's actor faces come from both of A's shots.
    chosen = pipeline.choose_actor_frames(a)
    assert min(chosen) < SHOT and max(chosen) >= 2 * SHOT
    back = pipeline.load_scan(pipeline.save_scan(scan, three_shots.work / "scan.npz"))
    assert back.labels == scan.labels and [p.frames for p in back.people] == [p.frames for p in scan.people]


def test_both_shots_of_a_are_swapped_and_b_passes_through(three_shots: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    scan, work = three_shots.scan, three_shots.work
    a, b = scan.people
    faces = {"a": pipeline.extract_faces(three_shots.clip, a, work / "a.npz"),
             "b": pipeline.extract_faces(three_shots.clip, b, work / "b.npz")}  # fmt: skip
    cfg = ModelConfig(**TINY)  # type: ignore[arg-type]
    bank = FaceBank(cfg)
    bank.add_identity("a")
    bank.add_identity("b", init_from="a")
    data = {}
    for key, path in faces.items():
        crops, points, masks = pipeline.load_faces(path)
        data[key] = make_trainset(crops, points, cfg.out_size, masks=masks)
    train = TrainConfig(batch=4, budget_seconds=None, max_steps=3, device="cpu", checkpoint_every_s=None,
                        preview_every_s=None, plateau_patience=None)  # fmt: skip
    Trainer(bank, data, train, work / "train.ckpt").run()

    written: list[np.ndarray] = []
    original = video.VideoWriter.write

    def write(writer: video.VideoWriter, frame: np.ndarray) -> None:
        written.append(frame.copy())
        original(writer, frame)

    monkeypatch.setattr(video.VideoWriter, "write", write)
    out = work / "swapped.mp4"
    report = convert_clip(three_shots.clip, bank, scan, out, ConvertOptions(targets=(SwapTarget(0, "b"),)))
    assert report.frames == 3 * SHOT
    [person] = report.people
    assert person["face"] == 1 and person["identity"] == "b" and person["frames"] == 2 * SHOT
    assert person["swapped"] >= 2 * SHOT - 2 and report.swapped == person["swapped"]
    assert report.skipped.get("no face") == SHOT, "B's shot is not A: nothing to swap there"

    source = three_shots.source
    changed = [bool(np.any(written[i] != label.draw_label(source[i]))) for i in range(3 * SHOT)]
    assert all(changed[i] for i in a.frames), "every frame of both of A's shots is swapped"
    assert not any(changed[SHOT : 2 * SHOT]), "B's frames are the clip's own, apart from the label"
    # The same on the encoded result, with H.264's tolerance: B's shot matches the source, A's shots do not.
    result = list(video.read_frames(out))
    region = label.LabelRenderer(*SIZE).region
    keep = np.ones(source[0].shape[:2], bool)
    keep[region[1] : region[3], region[0] : region[2]] = False

    def error(i: int, where: np.ndarray) -> float:
        return float(np.abs(result[i].astype(np.int16) - source[i].astype(np.int16))[where & keep].mean())

    def face(i: int) -> np.ndarray:
        x0, y0, x1, y1 = (int(v) for v in a.faces[i].box)
        zone = np.zeros_like(keep)
        zone[y0:y1, x0:x1] = True
        return zone

    b_error = max(error(i, keep) for i in range(SHOT, 2 * SHOT))
    a_error = min(error(i, face(i)) for i in a.frames)
    assert b_error < 3.0, f"B's frames differ by {b_error:.2f} on average (re-encoding alone: ~2)"
    assert a_error > 2 * b_error, f"A's faces differ by only {a_error:.2f} in some frame"


def test_stage_clip_each_person_once_and_the_wide_to_close_cut(clips: Path, landmarker_model: Path) -> None:
    scan = pipeline.scan_video(clips / "stage_multi_face.mp4", landmarker_model)
    # 20: the wide shot of the stage to a close-up (histogram change 0.38); 82 and 211: to the singer, the audience.
    assert {20, 82, 211} <= scan.cuts and len(scan.cuts) <= 4
    singer = next(p for p in scan.people if any(t.first == 0 and t.best_size() > 40 for t in p.tracks))
    assert any(t.first >= 82 for t in singer.tracks), "the singer of the wide shot is the one of the close-up"
    seen = [t.index for p in scan.people for t in p.tracks]
    assert len(seen) == len(set(seen)), "a track belongs to one person"
    for p in scan.people:  # never two faces of one person at the same time
        frames = [i for t in p.tracks for i in t.frames]
        assert len(frames) == len(set(frames))
    assert len(scan.people) < len(scan.tracks)


def test_a_scan_saved_before_people_reads_back_with_a_person_per_track(tmp_path: Path) -> None:
    """A job resumed across the upgrade finds a scan.npz without labels or embeddings (format 1)."""
    rng = np.random.default_rng(0)
    old = tmp_path / "scan.npz"
    arrays = {"meta": np.array([40, 320, 240], np.int64), "cuts": np.array([20], np.int64)}
    for n, frames in enumerate((range(0, 20), range(20, 40))):
        pts = rng.uniform(60, 200, (len(frames), 478, 2)).astype(np.float32)
        arrays |= {f"t{n}_frames": np.array(frames, np.int64), f"t{n}_points": pts,
                   f"t{n}_pose": np.full((len(frames), 4, 4), np.nan, np.float32)}  # fmt: skip
    np.savez_compressed(old, **arrays)
    scan = pipeline.load_scan(old)
    assert scan.labels is None and scan.cuts == {20}
    assert [[t.index for t in p.tracks] for p in scan.people] == [[0], [1]]
    again = pipeline.load_scan(pipeline.save_scan(scan, tmp_path / "again.npz"))
    assert again.labels is None and [p.frames for p in again.people] == [p.frames for p in scan.people]
