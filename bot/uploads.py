"""Download users' attachments at once (their signed URLs expire) and check them by content, never by name or MIME.

The bot never decodes media (no cv2 here): it reads magic bytes to tell photos from videos from everything else,
caps the bytes it accepts while streaming, and reads an MP4/MOV's duration from its ``mvhd`` box and its video
track's frame count (the sample table) and frame rate. The worker decodes the file later and has the last word
(corrupt frames, no face, decompression bombs; it counts the frames again).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import aiohttp
import discord

from common.errors import FamswapError, MediaTooLarge, UnsupportedMedia
from storage import UploadKind

CHUNK = 64 * 1024
PHOTO_HINT = "Send a JPEG, PNG or WebP photo."
VIDEO_HINT = "Send an MP4, MOV or WebM video."

# ISO base media brands (bytes 8..12 of an "ftyp" box) that are video containers ffmpeg reads.
_VIDEO_BRANDS = {b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ", b"M4VH", b"M4VP",
                 b"qt  ", b"3gp4", b"3gp5", b"3gp6", b"3g2a", b"dash", b"MSNV", b"f4v ", b"mmp4"}
_IMAGE_BRANDS = {b"heic", b"heix", b"mif1", b"msf1", b"avif"}


@dataclass(frozen=True)
class Media:
    """One downloaded attachment, checked: ``kind`` photo or video and ``format`` as its bytes say."""

    filename: str
    data: bytes
    kind: UploadKind
    format: str  # jpeg, png, webp, mp4, mov, webm, mkv, avi

    @property
    def size(self) -> int:
        return len(self.data)


def sniff(head: bytes) -> tuple[UploadKind, str] | None:
    """Photo or video, and its format, from the first bytes of a file; None for anything else."""
    if head.startswith(b"\xff\xd8\xff"):
        return UploadKind.IMAGE, "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return UploadKind.IMAGE, "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return UploadKind.IMAGE, "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return UploadKind.VIDEO, "avi"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _VIDEO_BRANDS:
            return UploadKind.VIDEO, "mov" if brand == b"qt  " else "mp4"
        return None  # HEIC/AVIF photos and unknown brands: the engine cannot decode them
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return UploadKind.VIDEO, "webm" if b"webm" in head[:64] else "mkv"
    return None


def describe(head: bytes) -> str:
    """A few words for what an unreadable file seems to be, for the refusal message."""
    if head[4:8] == b"ftyp" and head[8:12] in _IMAGE_BRANDS:
        return "a HEIC/AVIF photo, which I can't read yet"
    if head.startswith(b"GIF8"):
        return "a GIF"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive or office document"
    if not head:
        return "empty"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "not a photo or video"
    return "a text file"


def mp4_duration(data: bytes) -> float | None:
    """Seconds, from the ``moov/mvhd`` box of an MP4/MOV; None when the file has no readable one."""
    box = _find_box(data, 0, len(data), b"moov")
    if box is None:
        return None
    mvhd = _find_box(data, box[0], box[1], b"mvhd")
    if mvhd is None:
        return None
    start = mvhd[0]
    version = data[start]
    try:
        if version == 1:
            timescale, duration = struct.unpack_from(">IQ", data, start + 20)
        else:
            timescale, duration = struct.unpack_from(">II", data, start + 12)
    except struct.error:
        return None
    return duration / timescale if timescale else None


def mp4_video_frames(data: bytes) -> tuple[int, float] | None:
    """(frames, seconds) of the first video track of an MP4/MOV: the sample count of its ``stsz`` box and the
    duration of its ``mdhd``; None when the file has no readable video track."""
    moov = _find_box(data, 0, len(data), b"moov")
    if moov is None:
        return None
    pos = moov[0]
    while (trak := _find_box(data, pos, moov[1], b"trak")) is not None:
        pos = trak[1]
        mdia = _find_box(data, trak[0], trak[1], b"mdia")
        hdlr = mdia and _find_box(data, mdia[0], mdia[1], b"hdlr")
        if mdia is None or hdlr is None or data[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
            continue
        mdhd = _find_box(data, mdia[0], mdia[1], b"mdhd")
        minf = _find_box(data, mdia[0], mdia[1], b"minf")
        stbl = minf and _find_box(data, minf[0], minf[1], b"stbl")
        stsz = stbl and _find_box(data, stbl[0], stbl[1], b"stsz")
        if mdhd is None or stsz is None:
            return None
        try:
            if data[mdhd[0]] == 1:
                timescale, duration = struct.unpack_from(">IQ", data, mdhd[0] + 20)
            else:
                timescale, duration = struct.unpack_from(">II", data, mdhd[0] + 12)
            (frames,) = struct.unpack_from(">I", data, stsz[0] + 8)  # after version/flags and sample_size
        except struct.error:
            return None
        return frames, (duration / timescale if timescale else 0.0)
    return None


def check_clip_frames(name: str, data: bytes, *, max_fps: float, max_frames: int) -> None:
    """Refuse an MP4/MOV whose video has more frames, or a higher frame rate, than the host allows."""
    found = mp4_video_frames(data)
    if found is None:
        return  # not readable here: the worker counts the frames before decoding any
    frames, seconds = found
    if frames > max_frames:
        raise MediaTooLarge(f"“{name}” has {frames:,} frames; the limit is {max_frames:,}.",
                            hint="Trim the clip or export it at 30 or 60 fps, then send it again.")
    # A frame more than the rate allows is rounding; a 1000 fps clip is not.
    if seconds > 0 and frames > 1 and (frames - 1) / seconds > max_fps:
        raise MediaTooLarge(f"“{name}” runs at {frames / seconds:.0f} frames per second; the limit is {max_fps:g}.",
                            hint="Export it at a normal frame rate (30 or 60 fps) and send it again.")


def _find_box(data: bytes, start: int, end: int, name: bytes) -> tuple[int, int] | None:
    """(payload start, payload end) of the first box called ``name`` among the boxes in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return None
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return None
        if kind == name:
            return pos + header, min(pos + size, end)
        pos += size
    return None


MAX_NAME_BYTES = 100


def safe_filename(name: str) -> str:
    """Keep a user's filename readable in messages but harmless as a stored name: at most ``MAX_NAME_BYTES`` bytes
    of UTF-8 (whole characters), its extension kept. It is never used as a path (the worker names files by id)."""
    cleaned = re.sub(r"[^\w.\- ]+", "_", name).strip(" ._") or "file"
    stem, dot, ext = cleaned.rpartition(".")
    if not dot or not stem or len(ext.encode()) > 10:
        stem, ext = cleaned, ""
    suffix = f".{ext}" if ext else ""
    room = MAX_NAME_BYTES - len(suffix.encode())
    return stem.encode()[:room].decode(errors="ignore").rstrip(" .") + suffix


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


async def download(
    session: aiohttp.ClientSession,
    attachment: discord.Attachment,
    *,
    max_bytes: int,
    kinds: tuple[UploadKind, ...] = (UploadKind.IMAGE, UploadKind.VIDEO),
    max_clip_seconds: float | None = None,
    max_clip_fps: float | None = None,
    max_clip_frames: int | None = None,
) -> Media:
    """Fetch one attachment now and check it: size (Discord's figure, then the bytes themselves), type by magic
    bytes, and a video's length. Raises ``MediaTooLarge`` / ``UnsupportedMedia`` with a message naming the file."""
    name = safe_filename(attachment.filename)
    if attachment.size > max_bytes:
        raise MediaTooLarge(
            f"“{name}” is {_mb(attachment.size)}; the limit is {_mb(max_bytes)}.",
            hint="Send a smaller file (or trim the video).",
        )
    data = await _fetch(session, attachment.url, name, max_bytes)
    found = sniff(data[:64])
    if found is None:
        want = VIDEO_HINT if kinds == (UploadKind.VIDEO,) else f"{PHOTO_HINT[:-1]}, or an MP4, MOV or WebM video."
        raise UnsupportedMedia(f"“{name}” is {describe(data[:64])}, not a photo or video I can use.", hint=want)
    kind, fmt = found
    if kind not in kinds:
        if kind is UploadKind.IMAGE:
            raise UnsupportedMedia(f"“{name}” is a photo, but this needs a video clip.", hint=VIDEO_HINT)
        raise UnsupportedMedia(f"“{name}” is a video, but this needs a photo.", hint=PHOTO_HINT)
    if kind is UploadKind.VIDEO and max_clip_seconds is not None and fmt in ("mp4", "mov"):
        seconds = mp4_duration(data)
        if seconds is not None and seconds > max_clip_seconds:
            raise MediaTooLarge(
                f"“{name}” is {seconds:.0f} s long; clips may be at most {max_clip_seconds:.0f} s.",
                hint="Trim it to the part you want and send it again.",
            )
        if max_clip_fps is not None and max_clip_frames is not None:
            check_clip_frames(name, data, max_fps=max_clip_fps, max_frames=max_clip_frames)
    return Media(name, data, kind, fmt)


async def _fetch(session: aiohttp.ClientSession, url: str, name: str, max_bytes: int) -> bytes:
    # Streamed with a cap: Discord's size figure is trusted for the early refusal, the bytes for the final one.
    chunks: list[bytes] = []
    total = 0
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=120)) as response:
            if response.status != 200:
                raise FamswapError(
                    f"I couldn't download “{name}” from Discord (HTTP {response.status}).",
                    hint="Send it again; attachment links expire after a while.",
                )
            async for chunk in response.content.iter_chunked(CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise MediaTooLarge(f"“{name}” is larger than {_mb(max_bytes)}.", hint="Send a smaller file.")
                chunks.append(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise FamswapError(f"I couldn't download “{name}” from Discord ({exc.__class__.__name__}).",
                           hint="Send it again in a moment.") from exc
    if total == 0:
        raise UnsupportedMedia(f"“{name}” is empty.", hint="Send the photo or video again.")
    return b"".join(chunks)
