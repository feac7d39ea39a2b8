"""Attachment checks without decoding (magic bytes, the mp4 header's duration) and the status message's wording."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import aiohttp
import discord
import pytest

from bot.progress import format_duration, progress_bar
from bot.uploads import describe, download, mp4_duration, safe_filename, sniff
from common.errors import FamswapError, MediaTooLarge, UnsupportedMedia
from storage import UploadKind
from tests.bot.fake_discord import FakeDiscord

KNOWN_SECONDS = {"selfie_man.mp4": 7.22, "scene_woman_room_720p.mp4": 9.43, "selfie_woman_expressive.mp4": 33.65}


def test_sniff_tells_photos_from_videos_by_content(photos: Path, clips: Path) -> None:
    for path in photos.iterdir():
        assert sniff(path.read_bytes()[:64]) is not None and sniff(path.read_bytes()[:64])[0] is UploadKind.IMAGE, path
    # the "jpg" of the dog is really a PNG: the name does not matter
    assert sniff((photos / "dog_no_human_face.jpg").read_bytes()[:64]) == (UploadKind.IMAGE, "png")
    for path in clips.iterdir():
        assert sniff(path.read_bytes()[:64]) == (UploadKind.VIDEO, "mp4"), path
    assert sniff(b"\x1a\x45\xdf\xa3\x01\x00\x00\x00\x00\x00\x00\x1f\x42\x86\x81\x01webm") == (UploadKind.VIDEO, "webm")
    assert sniff(b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00") == (UploadKind.VIDEO, "mov")


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (b"just some notes\n", "a text file"),
        (b"%PDF-1.4", "a PDF document"),
        (b"GIF89a\x01\x00", "a GIF"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC/AVIF"),
        (b"PK\x03\x04", "zip archive"),
        (b"\x00\xff\xfe\x80\x81", "not a photo or video"),
    ],
)
def test_refused_files_are_described(head: bytes, words: str) -> None:
    assert sniff(head) is None
    assert words in describe(head)


def test_mp4_duration_from_the_header(clips: Path) -> None:
    for name, seconds in KNOWN_SECONDS.items():
        assert mp4_duration((clips / name).read_bytes()) == pytest.approx(seconds, abs=0.01)
    assert mp4_duration(b"\x00\x00\x00\x18ftypmp42" + bytes(100)) is None


def test_safe_filename() -> None:
    assert safe_filename("../../etc/passwd") == "etc_passwd"
    assert safe_filename("Oma & Opa.jpg") == "Oma _ Opa.jpg"
    assert safe_filename("") == "file"


def test_safe_filename_is_limited_in_bytes_and_keeps_the_extension() -> None:
    long = "顔" * 96 + ".jpg"  # 100 characters, 292 bytes
    short = safe_filename(long)
    assert len(short.encode()) <= 100 and short.endswith(".jpg") and short.startswith("顔")
    assert safe_filename("ü" * 200).encode().decode() == "ü" * 50  # whole characters only


def _attachment(fake: FakeDiscord, name: str, data: bytes) -> discord.Attachment:
    # download() reads only the id, name, size and URL: no client state needed.
    return discord.Attachment(data=fake.upload(name, data).payload(), state=SimpleNamespace(http=None))  # type: ignore[arg-type]


async def test_download_checks_kind_and_length(fake: FakeDiscord, clips: Path, photos: Path) -> None:
    long_clip = (clips / "selfie_woman_expressive.mp4").read_bytes()
    async with aiohttp.ClientSession() as session:
        media = await download(session, _attachment(fake, "ok.mp4", (clips / "selfie_man.mp4").read_bytes()),
                               max_bytes=10**7, kinds=(UploadKind.VIDEO,), max_clip_seconds=20)
        assert media.kind is UploadKind.VIDEO and media.format == "mp4" and media.size == 187263
        with pytest.raises(MediaTooLarge, match="34 s long; clips may be at most 20 s"):
            await download(session, _attachment(fake, "long.mp4", long_clip), max_bytes=10**7, max_clip_seconds=20)
        with pytest.raises(UnsupportedMedia, match="is a video, but this needs a photo"):
            await download(session, _attachment(fake, "v.mp4", long_clip), max_bytes=10**7, kinds=(UploadKind.IMAGE,))
        gone = _attachment(fake, "gone.jpg", b"x")
        fake.cdn.clear()  # an expired link
        with pytest.raises(FamswapError, match="couldn't download “gone.jpg”"):
            await download(session, gone, max_bytes=10**7)


def test_progress_words() -> None:
    assert progress_bar(None) == ""
    assert progress_bar(50, width=4) == "▰▰▱▱ 50%"
    assert progress_bar(140, width=2) == "▰▰ 100%"
    assert format_duration(12) == "about 10 s"
    assert format_duration(250) == "about 4 min"
    assert format_duration(4800) == "about 1 h 20 min"
    assert format_duration(7200) == "about 2 h"
