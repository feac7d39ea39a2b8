"""One person per face set: the sampling logic on made-up embeddings, then real media through build_faceset (a
selfie video and a photo of someone else; a video that cuts to someone else), the stored reference, and the
reference of an older set computed on demand."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from swap_engine.embed import EMBED_DIM, SAME_PERSON, FaceEmbedder, distances
from swap_engine.faceset import (
    FACESET_JSON,
    OTHER_PERSON,
    build_faceset,
    faceset_reference,
    load_faceset,
    merge_facesets,
)
from swap_engine.one_person import FaceToCheck, check_one_person

_CROP = np.zeros((8, 8, 3), np.uint8)
_POINTS = np.zeros((478, 2), np.float32)


def _person(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=EMBED_DIM).astype(np.float32)
    return v / np.linalg.norm(v)  # two such people are about 1.4 apart


def _faces(layout: Sequence[tuple[str, int | None]]) -> list[FaceToCheck]:
    return [FaceToCheck(_CROP, _POINTS, source, frame) for source, frame in layout]


def test_a_video_that_cuts_to_someone_else_loses_those_frames_only() -> None:
    a, b = _person(1), _person(2)
    # A 60-face video: A, then B for frames 30-38, then A again; and one photo of B.
    truth = [b if 30 <= f <= 38 else a for f in range(60)] + [b]
    faces = _faces([("clip.mp4", f) for f in range(60)] + [("b.jpg", None)])
    asked: list[int] = []

    def embed(indices: Sequence[int]) -> np.ndarray:
        asked.extend(indices)
        rng = np.random.default_rng(len(asked))
        return np.stack([truth[i] + rng.normal(scale=0.01, size=EMBED_DIM) for i in indices])

    check = check_one_person(faces, embed)
    assert check.same.tolist() == [not 30 <= f <= 38 for f in range(60)] + [False]
    assert len(asked) == len(set(asked)) < 25  # a sample, each face at most once, not all 61
    assert check.embedded.sum() == len(asked)
    assert distances(check.reference, a)[0, 0] < 0.05 and check.count == int((check.embedded & check.same).sum())


def test_a_video_outweighs_photos_of_someone_else_and_a_tie_goes_to_the_first_input() -> None:
    a, b = _person(1), _person(2)
    faces = _faces([("b1.jpg", None), ("b2.jpg", None), ("b3.jpg", None)] + [("a.mp4", f) for f in range(40)])

    def embed(indices: Sequence[int]) -> np.ndarray:
        return np.stack([b if faces[i].frame is None else a for i in indices])

    # Three photos against the video's 40 faces (8 embedded, each standing for its neighbours): the video wins.
    assert check_one_person(faces, embed).same.tolist() == [False] * 3 + [True] * 40
    two = _faces([("a.jpg", None), ("b.jpg", None)])
    check = check_one_person(two, lambda idx: np.stack([[a, b][i] for i in idx]))
    assert check.same.tolist() == [True, False]


def test_the_person_enrolled_before_votes_with_the_weight_of_their_faces() -> None:
    a, b = _person(1), _person(2)
    truth = {"a.jpg": a, "b1.jpg": b, "b2.jpg": b}
    photos = _faces([("b1.jpg", None), ("a.jpg", None), ("b2.jpg", None)])

    def embed(indices: Sequence[int]) -> np.ndarray:
        return np.stack([truth.get(photos[i].source, b) for i in indices])

    # Two new photos of B against one of A: without the prior B wins; with A's 20 enrolled faces, A does.
    assert check_one_person(photos, embed).same.tolist() == [True, False, True]
    check = check_one_person(photos, embed, prior=(a, 20))
    assert check.same.tolist() == [False, True, False] and check.prior_won and check.count == 1
    # Nothing new of A: nobody is the person, and the reference stays A's.
    only_b = check_one_person(photos[:1], embed, prior=(a, 20))
    assert only_b.same.tolist() == [False] and only_b.prior_won and only_b.count == 0
    assert distances(only_b.reference, a)[0, 0] < 1e-5
    # A long video of B outvotes a prior of one face.
    video = _faces([("b.mp4", f) for f in range(40)])
    outvoted = check_one_person(video, lambda idx: np.stack([b for _ in idx]), prior=(a, 1))
    assert outvoted.same.all() and not outvoted.prior_won


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder()


def _clip(path: Path, sources: Sequence[tuple[Path, int]], side: int = 360, fps: int = 15) -> Path:
    """Frames from each (clip, count) in turn, every other frame, scaled to ``side`` px square."""
    from swap_engine.video import VideoWriter, read_frames

    with VideoWriter(path, side, side, fps) as writer:
        for clip, count in sources:
            for frame in itertools.islice(read_frames(clip), 0, 2 * count, 2):
                h, w = frame.shape[:2]
                s = min(h, w)
                square = frame[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
                writer.write(cv2.resize(square, (side, side), interpolation=cv2.INTER_AREA))
    return path


def test_selfie_video_kept_photo_of_someone_else_rejected_with_a_reason(
    clips: Path, photos: Path, landmarker_model: Path, embedder: FaceEmbedder, tmp_path: Path
) -> None:
    selfie = _clip(tmp_path / "selfie_man.mp4", [(clips / "selfie_man.mp4", 45)])
    out = tmp_path / "set"
    report = build_faceset([selfie, photos / "obama.jpg"], out, landmarker_model, embedder=embedder)
    assert {r.source for r in report.kept} == {"selfie_man.mp4"}
    whole = [r for r in report.rejected if r.frame is None]
    assert [(r.source, r.reason) for r in whole] == [("obama.jpg", OTHER_PERSON)]
    assert whole[0].detail == "obama.jpg shows someone else — not the person in selfie_man.mp4."
    assert "1 someone else" in report.summary()
    document = json.loads((out / FACESET_JSON).read_text())
    assert document["version"] == 3 and len(document["reference"]) == EMBED_DIM
    assert document["reference_count"] == report.reference_count >= 1
    assert faceset_reference(out, embedder)[0] == pytest.approx(report.reference, abs=1e-5)
    assert len(load_faceset(out)) == len(report.kept)


def test_frames_of_someone_else_in_a_video_are_dropped_and_said(
    clips: Path, landmarker_model: Path, embedder: FaceEmbedder, tmp_path: Path
) -> None:
    # 3 s of the man, then 1 s of a woman: the woman's frames are left out, the man's kept.
    mixed = _clip(tmp_path / "mixed.mp4", [(clips / "selfie_man.mp4", 45), (clips / "selfie_woman_expressive.mp4", 15)])
    report = build_faceset([mixed], tmp_path / "set", landmarker_model, embedder=embedder, min_distance=0.0)
    dropped = sorted(r.frame for r in report.rejected if r.reason == OTHER_PERSON and r.frame is not None)
    assert dropped and min(dropped) >= 44 and len(dropped) >= 12, dropped
    assert report.kept and all(r.frame is not None and r.frame < 45 for r in report.kept)
    assert any("of mixed.mp4 show someone else" in note for note in report.notes), report.notes
    # All of a video being someone else is a rejection of the whole video, naming whom it was compared with.
    woman = _clip(tmp_path / "woman.mp4", [(clips / "selfie_woman_expressive.mp4", 15)])
    both = build_faceset([mixed, woman], tmp_path / "set2", landmarker_model, embedder=embedder)
    assert any(r.source == "woman.mp4" and r.frame is None and "not the person in mixed.mp4" in r.detail
               for r in both.rejected)


def test_an_older_set_gets_its_reference_on_demand_and_merging_averages(
    photos: Path, landmarker_model: Path, embedder: FaceEmbedder, tmp_path: Path
) -> None:
    new = tmp_path / "new"
    made = build_faceset([photos / "obama.jpg"], new, landmarker_model, embedder=embedder)
    old = tmp_path / "old"
    build_faceset([photos / "biden.jpg"], old, landmarker_model)  # no embedder: no reference, like a format-2 set
    document = json.loads((old / FACESET_JSON).read_text())
    document["version"] = 2
    del document["reference"], document["reference_count"]
    (old / FACESET_JSON).write_text(json.dumps(document))
    reference, count = faceset_reference(old, embedder)
    assert count == 1 and distances(reference, made.reference)[0, 0] > SAME_PERSON  # Biden is not Obama
    assert json.loads((old / FACESET_JSON).read_text())["reference"] is not None  # computed once, then kept
    assert merge_facesets(new, old) == 2
    merged = json.loads((new / FACESET_JSON).read_text())
    assert merged["reference_count"] == 2
    assert np.asarray(merged["reference"]) == pytest.approx((reference + made.reference) / 2, abs=1e-5)
