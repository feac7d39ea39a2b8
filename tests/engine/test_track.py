"""Face tracks: linking by overlap, ranking by screen time × size, cut detection, the contact sheet."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

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
