"""Frame-rate and frame-count caps: checked at probe time, frames counted (headers can lie), reading stops at the cap."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from common.errors import MediaTooLarge
from swap_engine import pipeline, video
from tests.media_kit import make_clip, shrink_durations


def test_a_1000_fps_clip_is_refused_at_probe_time(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "fast.mp4", fps=1000, frames=12)
    assert float(video.probe(clip).fps) == 1000
    with pytest.raises(MediaTooLarge, match="1000 frames per second; the limit is 120"):
        video.probe(clip, max_seconds=60, max_fps=120, max_frames=3600)


def test_edited_header_durations_do_not_hide_the_frames(tmp_path: Path) -> None:
    honest = make_clip(tmp_path / "long.mp4", fps=30, frames=90)
    lying = tmp_path / "short.mp4"
    lying.write_bytes(shrink_durations(honest.read_bytes(), 30))
    claimed = video.probe(lying, max_seconds=1)
    assert claimed.duration < 0.2, "the header claims a tenth of a second"
    with pytest.raises(MediaTooLarge, match="has 90 frames; the limit is 30"):
        video.probe(lying, max_seconds=1, max_fps=120, max_frames=30)


def test_scan_refuses_a_clip_over_the_frame_cap(tmp_path: Path, landmarker_model: Path) -> None:
    clip = make_clip(tmp_path / "ten.mp4", frames=10)
    with pytest.raises(MediaTooLarge, match="10 frames; the limit is 5"):
        pipeline.scan_video(clip, landmarker_model, max_frames=5)


def test_reading_stops_at_the_cap() -> None:
    # Should the decoder find more frames than the probe counted, reading stops at the cap with the same message.
    pulled: list[int] = []

    def endless() -> Iterator[np.ndarray]:
        while True:
            pulled.append(1)
            yield np.zeros((2, 2, 3), np.uint8)

    with pytest.raises(MediaTooLarge, match="more than 5 frames"):
        for _ in pipeline._capped(endless(), 5, "clip.mp4"):
            pass
    assert len(pulled) == 6
