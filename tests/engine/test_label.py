"""The "AI face swap" badge: present, only in its region, legible at 360p and 1080p, impossible to switch off."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from swap_engine.label import (
    CORNERS,
    MIN_BADGE_PX,
    SYNTHETIC_METADATA,
    SYNTHETIC_XMP,
    LabelRenderer,
    LabelStyle,
    draw_label,
    label_region,
)

SIZES = [(640, 360), (1280, 720), (1920, 1080), (1080, 1920), (96, 64)]


def _frame(w: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_only_the_label_region_changes(w: int, h: int) -> None:
    frame = _frame(w, h)
    before = frame.copy()
    out = draw_label(frame)
    np.testing.assert_array_equal(frame, before)  # input untouched
    x0, y0, x1, y1 = label_region(w, h)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    outside = np.ones((h, w), bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out[outside], frame[outside])
    changed = np.any(out[y0:y1, x0:x1] != frame[y0:y1, x0:x1], axis=2)
    assert changed.mean() > 0.8  # everything but the rounded corners' tips


@pytest.mark.parametrize("level", [0, 128, 255])
def test_label_is_visible_on_black_grey_and_white_video(level: int) -> None:
    frame = np.full((720, 1280, 3), level, np.uint8)
    out = draw_label(frame)
    x0, y0, x1, y1 = label_region(1280, 720)
    region = out[y0:y1, x0:x1].astype(int)
    assert np.abs(region - level).mean() > 25
    # Text (white) against the plate: a strong contrast inside the badge whatever the video is.
    luma = region.mean(axis=2)
    assert luma.max() - np.median(luma) > 90


@pytest.mark.parametrize(("h", "min_badge", "min_text"), [(360, MIN_BADGE_PX, 9), (1080, 44, 18)])
def test_legible_size(h: int, min_badge: int, min_text: int) -> None:
    w = h * 16 // 9
    x0, y0, x1, y1 = label_region(w, h)
    assert y1 - y0 >= min_badge
    assert x1 - x0 <= w // 3  # small: a corner badge, not a banner
    out = draw_label(np.zeros((h, w, 3), np.uint8))
    ink_rows = np.flatnonzero((out[y0:y1, x0:x1].min(axis=2) > 200).any(axis=1))
    assert ink_rows.size and ink_rows[-1] - ink_rows[0] + 1 >= min_text  # cap height + descender of the text


@pytest.mark.parametrize("corner", CORNERS)
def test_corners(corner: str) -> None:
    w, h = 1280, 720
    x0, y0, x1, y1 = label_region(w, h, LabelStyle(corner=corner))  # type: ignore[arg-type]
    assert (x0 > w / 2) == corner.endswith("right")
    assert (y0 > h / 2) == corner.startswith("bottom")
    out = draw_label(_frame(w, h), LabelStyle(corner=corner))  # type: ignore[arg-type]
    assert np.any(out[y0:y1, x0:x1] != _frame(w, h)[y0:y1, x0:x1])


def test_scale_resizes_within_limits() -> None:
    small = label_region(1920, 1080, LabelStyle(scale=1 / 48))
    big = label_region(1920, 1080, LabelStyle(scale=1 / 10))
    assert big[3] - big[1] > 3 * (small[3] - small[1])
    tiny = label_region(640, 360, LabelStyle(scale=1 / 48))  # 7.5 px wanted: the floor keeps it readable
    assert tiny[3] - tiny[1] == MIN_BADGE_PX


@pytest.mark.parametrize(
    "kwargs",
    [{"opacity": 0.0}, {"opacity": 0.2}, {"scale": 0.0}, {"scale": 1e-4}, {"scale": 0.5}, {"corner": "none"}],
)
def test_no_style_can_hide_the_label(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LabelStyle(**kwargs)  # type: ignore[arg-type]


def test_empty_text_is_refused() -> None:
    with pytest.raises(ValueError):
        draw_label(_frame(640, 360), text="  ")


def test_renderer_reuses_its_badge() -> None:
    r = LabelRenderer(1280, 720)
    frame = _frame(1280, 720)
    out = r.apply(frame)
    np.testing.assert_array_equal(out, draw_label(frame))
    assert r.region == label_region(1280, 720)
    same = frame.copy()
    assert r.apply(same, inplace=True) is same
    np.testing.assert_array_equal(same, out)
    with pytest.raises(ValueError):
        r.apply(_frame(640, 360))


def test_synthetic_metadata() -> None:
    assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in SYNTHETIC_METADATA.items())
    assert "AI face swap" in SYNTHETIC_METADATA["comment"] and "famswap" in SYNTHETIC_METADATA["comment"]
    assert "synthetic" in SYNTHETIC_METADATA["description"].lower()
    assert SYNTHETIC_METADATA["ai_generated"] == "true"


def test_synthetic_xmp_is_valid_and_survives_a_webp() -> None:
    root = ET.fromstring(SYNTHETIC_XMP)
    desc = root.find(".//{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description")
    assert desc is not None
    source = desc.get("{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}DigitalSourceType")
    assert source == SYNTHETIC_METADATA["digital_source_type"]
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "WEBP", xmp=SYNTHETIC_XMP.encode())
    assert b"trainedAlgorithmicMedia" in Image.open(io.BytesIO(buf.getvalue())).info["xmp"]
