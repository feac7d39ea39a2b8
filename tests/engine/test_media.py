"""media: kinds sniffed by content; photos load upright as RGB uint8; bad files are refused quickly and clearly."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import MediaTooLarge, UnsupportedMedia
from swap_engine.media import load_image, sniff_kind


def _png_with_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims width x height but whose data is a few bytes: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_sniff_kinds(photos: Path, clips: Path, tmp_path: Path) -> None:
    assert sniff_kind(photos / "obama.jpg") == "image"
    assert sniff_kind(photos / "dog_no_human_face.jpg") == "image"  # a PNG named .jpg
    assert sniff_kind(clips / "tiny_man_noaudio.mp4") == "video"
    samples = {
        "a.webp": (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image"),
        "a.gif": (b"GIF89a\x01\x00\x01\x00", "image"),
        "a.heic": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "image"),
        "a.mov": (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", "video"),
        "a.webm": (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", "video"),
        "a.avi": (b"RIFF\x10\x00\x00\x00AVI LIST", "video"),
        "a.txt": (b"hello, I am text\n", None),
        "empty.jpg": (b"", None),
    }
    for name, (data, kind) in samples.items():
        (tmp_path / name).write_bytes(data)
        assert sniff_kind(tmp_path / name) == kind, name
    assert sniff_kind(tmp_path / "missing.jpg") is None


def test_load_photo_is_rgb_uint8(photos: Path) -> None:
    image = load_image(photos / "obama.jpg")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.flags.c_contiguous
    # Misnamed PNG loads by content.
    assert load_image(photos / "dog_no_human_face.jpg").shape == (512, 512, 3)


def test_exif_orientation_is_applied(photos: Path, tmp_path: Path) -> None:
    # The Mona Lisa JPEG carries orientation 1 (upright): stored as 720 wide, 1280 high.
    assert load_image(photos / "painting_mona_lisa.jpg").shape == (1280, 720, 3)
    # A sideways-stored image tagged "rotate 90° clockwise to view" (orientation 6) comes out upright.
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :30] = (255, 0, 0)  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    upright = load_image(path)
    assert upright.shape == (60, 40, 3)
    assert upright[5, 20, 0] > 200 and upright[55, 20, 0] < 60  # stored-left is now the top


def test_transparency_goes_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    path = tmp_path / "clear.png"
    Image.fromarray(rgba, "RGBA").save(path)
    assert (load_image(path) == 255).all()


def _refusal(path: Path, error: type[Exception], **kwargs: int) -> str:
    start = time.perf_counter()
    with pytest.raises(error) as info:
        load_image(path, **kwargs)
    assert time.perf_counter() - start < 1.0
    text = info.value.user_text()
    assert path.name in text
    assert info.value.hint
    return text


def test_refuses_empty_text_video_and_missing(tmp_path: Path, clips: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert "empty" in _refusal(empty, UnsupportedMedia)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n" * 10)
    assert "not a photo" in _refusal(text, UnsupportedMedia)
    assert "video" in _refusal(clips / "tiny_man_noaudio.mp4", UnsupportedMedia)
    assert "does not exist" in _refusal(tmp_path / "nope.png", UnsupportedMedia)


def test_refuses_truncated_and_corrupt(photos: Path, tmp_path: Path) -> None:
    data = (photos / "obama.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    assert "truncated" in _refusal(cut, UnsupportedMedia)
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buffer, "PNG")
    garbled = bytearray(buffer.getvalue())
    garbled[60:90] = b"\x55" * 30  # inside the compressed pixel data
    bad = tmp_path / "garbled.png"
    bad.write_bytes(bytes(garbled))
    _refusal(bad, UnsupportedMedia)
    header_only = tmp_path / "header.jpg"
    header_only.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 20)
    _refusal(header_only, UnsupportedMedia)


def test_refuses_heic_with_a_fix(tmp_path: Path) -> None:
    heic = tmp_path / "IMG_0001.HEIC"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 100)
    assert "JPEG" in _refusal(heic, UnsupportedMedia)


def test_refuses_decompression_bomb_from_its_header(tmp_path: Path) -> None:
    bomb = _png_with_header(tmp_path / "bomb.png", 20000, 20000)
    assert bomb.stat().st_size < 2000
    assert "400 megapixels" in _refusal(bomb, MediaTooLarge)
    # Below Pillow's own bomb limit, our limit still applies before decoding.
    big = _png_with_header(tmp_path / "big.png", 5000, 5000)
    assert "5000x5000" in _refusal(big, MediaTooLarge, max_pixels=1_000_000)
