"""Face tracks: linking by overlap, ranking by screen time × size, cut detection, the contact sheet."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from common.errors import NoFaceFound
from swap_engine.track import (
    box_iou,
    contact_sheet,
    detect_cuts,
    frame_signature,
    link_tracks,
    signature_distance,
)


def _face(x: float, y: float, side: float) -> SimpleNamespace:
    return SimpleNamespace(box=(x, y, x + side, y + side), size=side, yaw=0.0)


def test_iou() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert abs(box_iou((0, 0, 10, 10), (5, 0, 15, 10)) - 1 / 3) < 1e-9


def test_two_people_become_two_tracks_ranked_by_size_and_time() -> None:
    frames = []
    for i in range(30):
        small = _face(300 + i, 50, 20)  # on screen all the time, but small
        big = _face(10 + i * 2, 10, 120)  # big, but only in the second half
        frames.append([small] + ([big] if i >= 15 else []))
    tracks = link_tracks(frames)
    assert len(tracks) == 2
    assert [t.index for t in tracks] == [0, 1]
    assert tracks[0].frames == list(range(15, 30))  # 15 × 120 beats 30 × 20
    assert tracks[1].frames == list(range(30))


def test_gap_is_bridged_but_cut_splits() -> None:
    frames = [[_face(100, 100, 50)] if i not in (5, 6, 7) else [] for i in range(20)]
    assert len(link_tracks(frames)) == 1
    assert [len(t.faces) for t in link_tracks(frames, cuts={10})] == [10, 7]


def test_noise_detections_are_dropped() -> None:
    frames = [[_face(100, 100, 50)] for _ in range(10)]
    frames[4] = frames[4] + [_face(500, 500, 30)]
    assert len(link_tracks(frames)) == 1


def test_cut_detection_on_histograms() -> None:
    dark = np.zeros((72, 128, 3), np.uint8)
    bright = np.full((72, 128, 3), 220, np.uint8)
    bright[:, :, 0] = 30
    sigs = [frame_signature(f) for f in (dark, dark, bright, bright)]
    diffs = [0.0] + [signature_distance(a, b) for a, b in zip(sigs, sigs[1:], strict=False)]
    assert detect_cuts(diffs) == frozenset({2})


def test_contact_sheet_grid() -> None:
    thumbs = [np.full((50, 40, 3), v, np.uint8) for v in (50, 100, 150, 200, 250)]
    sheet = contact_sheet(thumbs, cell=100, columns=4)
    assert sheet.shape == (200, 400, 3) and sheet.dtype == np.uint8
    # The numbered tiles differ from each other.
    assert sheet[50, 50].tolist() != sheet[50, 150].tolist()


def test_a_moderate_change_is_a_cut_when_the_frames_around_are_calm() -> None:
    calm = [0.0] + [0.04] * 19 + [0.38] + [0.04] * 20  # stage_multi_face.mp4's wide-to-close cut at 20
    assert detect_cuts(calm) == frozenset({20})
    busy = [0.0] + [0.15, 0.1] * 10 + [0.38] + [0.12, 0.2] * 10  # a handheld shot: 0.38 is not unusual here
    assert detect_cuts(busy) == frozenset()
    assert detect_cuts([0.0, 0.6, 0.55, 0.7]) == frozenset({1, 2, 3}), "a big change is a cut whatever its neighbours"
    # A board over a third of the frame changes the histogram as much, but not all over the picture.
    assert detect_cuts(calm, spreads=[0.0] * 20 + [0.22] + [0.0] * 20) == frozenset()
    assert detect_cuts(calm, spreads=[0.0] * 20 + [0.89] + [0.0] * 20) == frozenset({20})


def test_cells_changed_says_where_the_picture_changed() -> None:
    from swap_engine.track import cell_signatures, cells_changed

    frame = np.zeros((90, 160, 3), np.uint8)
    frame[..., 0] = np.linspace(120, 250, 160, dtype=np.uint8)[None, :]  # reds, darker to the left
    frame[..., 1] = 30
    board = frame.copy()
    board[30:60, 55:105] = (40, 40, 200)  # the middle cell covered by something blue
    other = frame[..., [1, 0, 2]]  # the same picture in greens: every cell changed
    assert cells_changed(cell_signatures(frame), cell_signatures(frame)) == 0.0
    assert cells_changed(cell_signatures(frame), cell_signatures(board)) <= 2 / 9
    assert cells_changed(cell_signatures(frame), cell_signatures(other)) == 1.0


def test_a_face_that_jumps_with_a_small_change_is_a_cut() -> None:
    diffs = [0.0] + [0.1, 0.3, 0.15] * 4  # a busy clip: 0.15 alone is not a cut
    boxes: list[list[tuple[float, float, float, float]]] = [[(10, 10, 60, 60)] for _ in diffs]
    boxes[6] = [(200, 40, 280, 120)]  # frame 6 (a change of 0.3): the face is elsewhere from here on
    boxes[7:] = [[(200, 40, 280, 120)]] * (len(diffs) - 7)
    assert detect_cuts(diffs) == frozenset()
    assert detect_cuts(diffs, boxes) == frozenset({6})
    boxes[6] = [(12, 10, 62, 60), (200, 40, 280, 120)]  # one face stayed: the camera did not move
    assert 6 not in detect_cuts(diffs, boxes)


def test_tracks_of_one_person_become_one_person_ranked_by_all_their_shots() -> None:
    from swap_engine.embed import group
    from swap_engine.track import ClipScan, Track, find_people

    def track(index: int, frames: range, side: float, person: float) -> Track:
        t = Track(index, {i: _face(100, 100, side) for i in frames})  # type: ignore[misc]
        t.embeddings = np.full((3, 128), person, np.float32) + np.random.default_rng(index).normal(0, 0.01, (3, 128)).astype(np.float32)
        return t

    tracks = [
        track(0, range(0, 30), 80, 0.0),  # A, first shot
        track(1, range(30, 50), 90, 0.2),  # B
        track(2, range(50, 60), 80, 0.0),  # A again
        track(3, range(50, 60), 70, 0.0),  # someone A's double, in the same shot: never A
        track(4, range(0, 60), 10, 0.5),  # far in the back all along: too small to offer
    ]
    scan = find_people(ClipScan(tracks, 60, frozenset({30, 50}), 320, 240), group)
    assert [[t.index for t in p.tracks] for p in scan.people] == [[0, 2], [1], [3]]
    assert [p.number for p in scan.people] == [1, 2, 3]
    assert scan.people[0].frames == list(range(0, 30)) + list(range(50, 60))
    with pytest.raises(NoFaceFound, match="no face 4"):
        scan.person(3)
    legacy = ClipScan(tracks, 60, frozenset(), 320, 240)  # a scan saved before people: a person per track
    assert [[t.index for t in p.tracks] for p in legacy.people] == [[0], [1], [2], [3]]
