"""Video in and out through ffmpeg pipes: probe a clip, stream its frames, encode frames to MP4, fit a file under a size.

Contract (arrays follow docs/ARCHITECTURE.md: frames are ``(H, W, 3)`` ``uint8`` RGB):

- ``probe(path, *, max_seconds=None, max_pixels=None, count_frames=False) -> VideoInfo``. Uses ffprobe's JSON when a
  system ffprobe exists, else parses ``ffmpeg -i``'s report (the bundled binary has no ffprobe). ``width``/``height``
  are the *display* size: after the rotation in the file and with non-square pixels made square, i.e. the shape of
  the frames ``read_frames`` yields. ``frame_count`` is the container's count (ffprobe) or ``duration * fps``
  (estimate, may be off by a frame); ``count_frames=True`` counts the video packets (no decoding, ~0.03 s per 10 s
  of 720p) and sets ``frame_count_exact``. Refuses with ``UnsupportedMedia`` (message naming the file): a missing,
  empty, text, corrupt or truncated file, a still image, a file without a video stream, and any container outside
  ``ALLOWED_FORMATS`` (so playlists such as HLS, which make ffmpeg open other files, never get decoded). Limits:
  ``MediaTooLarge``; ``max_fps`` and ``max_frames`` (``probe(..., max_fps=None, max_frames=None)``) are checked
  before anything is decoded, ``max_frames`` against the counted packets (a header's durations can be edited).
- ``read_frames(path, *, start=0.0, max_frames=None, size=None, fps=None) -> Iterator[np.ndarray]``: probes eagerly
  (errors raise at the call), then streams writable frames from one ``ffmpeg`` pipe started at the first ``next()``.
  ``start`` is in seconds from the beginning of the file. ``size=(w, h)`` scales to exactly that size.
  ``fps`` resamples to a constant rate (use it for variable-frame-rate phone clips whose audio must stay in sync);
  without it every decoded frame is passed through. Closing the generator (or dropping it) kills and reaps ffmpeg.
- ``prefetch(frames, depth=8) -> Iterator``: the same items, produced ``depth`` ahead by a background thread (so
  reading ffmpeg's pipe overlaps the caller's work); errors re-raise in the caller, in order; closing the returned
  generator stops the thread and closes ``frames`` there.
- ``VideoWriter(path, width, height, fps, *, audio_from=None, audio_start=0.0, bitrate=None, crf=20, metadata=None,
  preset="veryfast")``: ``.write(frame)`` raw RGB in, H.264 (libx264) yuv420p BT.709 MP4 out, ``+faststart``, at
  exactly ``fps`` (a ``Fraction`` such as 30000/1001). Odd sizes are padded by one black row/column to even.
  Audio, when ``audio_from`` has any, is taken from ``audio_start`` seconds (the ``start`` given to
  ``read_frames``), copied when AAC else encoded to AAC, and cut to the video's length (the video is never cut).
  ``metadata`` goes into the container (custom keys are written as MP4 ``mdta`` keys; ``probe`` reads them back in
  ``VideoInfo.tags``). ``.close()`` returns the path; the file only appears, atomically, when everything worked;
  failures raise ``EncodeError`` carrying ffmpeg's last stderr lines.
- ``fit_to_size(src, dst, max_bytes, *, audio_from=None, metadata=None) -> FitResult``: copies when ``src`` already
  fits, else re-encodes with a capped bitrate (``-maxrate``/``-bufsize``) computed from the duration and the audio
  bitrate, downscaling when too few bits per pixel would be left, retrying smaller if the first result is over.
  ``EncodeError`` when the budget cannot hold even the smallest version.
- ``comparison_animation(before, after, out_path, *, height=240, fps=10, max_frames=30, max_bytes=512_000)``:
  side-by-side before/after GIF (palettegen/paletteuse) or animated WebP, chosen by the suffix.
- The ``*_command`` functions and ``plan_fit`` are pure: they build argument lists and numbers without running
  anything, so tests check them without ffmpeg. Those whose options differ between ffmpeg versions take
  ``release=(major, minor)`` (``FFmpegTools.release``; default: the newest) and work on 4.4, 5.1, 6.x and 7.x+.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import numpy as np

from common.errors import EncodeError, MediaTooLarge, UnsupportedMedia
from swap_engine.ffmpeg_bin import SNAPSHOT, FFmpegTools, Release, find_ffmpeg

# ffmpeg demuxer names we accept for user videos. Anything else (hls, concat, image2, *_pipe, raw streams...)
# is refused: several demuxers open further files or URLs named inside the upload.
ALLOWED_FORMATS = frozenset(
    {"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "gif", "webp_anim", "flv", "mpegts", "mpeg", "asf", "ogg"}
)
# Audio sources for VideoWriter(audio_from=...) may also be plain audio files.
AUDIO_FORMATS = ALLOWED_FORMATS | {"mp3", "wav", "aac", "flac"}
# Probing also lets common still-image demuxers open, only to tell the user "that is a photo".
_PROBE_FORMATS = ALLOWED_FORMATS | {"image2", "jpeg_pipe", "png_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe"}
_STILL_FORMATS_SUFFIX = "_pipe"
# MP4 keys the mov muxer writes as standard ("udta"/"ilst") atoms; any other key needs +use_metadata_tags.
_STANDARD_MP4_KEYS = frozenset(
    {
        "title", "artist", "author", "album", "album_artist", "comment", "composer", "copyright", "date",
        "description", "encoder", "genre", "grouping", "lyrics", "synopsis", "show", "episode_id", "network",
        "keywords",
    }
)
_KEY_RE = re.compile(r"^[A-Za-z0-9_]+$")
_PROBE_TIMEOUT_S = 60.0
_STDERR_TAIL_LINES = 15
_NTSC_BASES = (24, 30, 48, 60, 120, 240)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# Probing
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learned about a clip. Sizes are the display size (after rotation, square pixels)."""

    path: Path
    width: int
    height: int
    fps: Fraction
    frame_count: int
    duration: float  # seconds of video (from its first frame)
    rotation: int  # 0/90/180/270: counter-clockwise degrees the player applies (ffmpeg's display matrix)
    has_audio: bool
    video_codec: str
    audio_codec: str | None
    bit_rate: int | None  # bits/s of the whole file
    audio_bit_rate: int | None = None  # bits/s of the first audio stream, when reported
    frame_count_exact: bool = False  # True when counted or read from the container's index
    container: str = ""  # ffmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    start_offset: float = 0.0  # seconds from the file's start to its first video frame (audio comes earlier)
    sample_aspect: Fraction = Fraction(1)  # pixel aspect of the stored frames; width already accounts for it
    tags: dict[str, str] = field(default_factory=dict)  # container metadata, e.g. {"comment": "..."}

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``, the shape of ``read_frames``' frames reversed."""
        return (self.width, self.height)


@dataclass
class StreamReport:
    """One stream as ffprobe or ``ffmpeg -i`` described it (raw: before rotation and pixel aspect are applied)."""

    kind: str  # "video", "audio", "subtitle", "data", "attachment"
    codec: str
    width: int | None = None
    height: int | None = None
    sar: Fraction | None = None
    fps: Fraction | None = None
    nb_frames: int | None = None
    duration: float | None = None
    start: float | None = None
    rotation: float = 0.0
    bit_rate: int | None = None
    attached_pic: bool = False


@dataclass
class ContainerReport:
    """A file as ffprobe or ``ffmpeg -i`` described it; ``probe`` turns it into a ``VideoInfo``."""

    format_name: str
    duration: float | None
    start: float | None
    bit_rate: int | None
    tags: dict[str, str]
    streams: list[StreamReport]

    def first(self, kind: str) -> StreamReport | None:
        for stream in self.streams:
            if stream.kind == kind and not stream.attached_pic:
                return stream
        return None


def input_args(path: Path, formats: frozenset[str] = ALLOWED_FORMATS) -> list[str]:
    """``-i`` for a user's file, fenced in: local files only, and only the demuxers in ``formats``.

    Without the fences a crafted upload (an HLS or concat playlist renamed .mp4) makes ffmpeg open other files or
    URLs named inside it. ``file:`` also stops a name such as ``-y`` or ``http:x.mp4`` being read as an option or a
    protocol.
    """
    names = sorted({name for fmt in formats for name in fmt.split(",")})
    return ["-protocol_whitelist", "file", "-format_whitelist", ",".join(names), "-i", _file_url(path)]


def ffmpeg_probe_command(ffmpeg: str, path: Path, formats: frozenset[str] = _PROBE_FORMATS) -> list[str]:
    """``ffmpeg -i`` with no output: prints the input report on stderr (and exits 1, which is expected)."""
    return [ffmpeg, "-hide_banner", "-nostdin", *input_args(path, formats)]


def ffprobe_command(ffprobe: str, path: Path, formats: frozenset[str] = _PROBE_FORMATS) -> list[str]:
    """ffprobe's JSON report of the format and every stream."""
    return [
        ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
        *input_args(path, formats),
    ]


def count_frames_command(ffmpeg: str, path: Path) -> list[str]:
    """Copy the first video stream's packets to nowhere and report ``frame=N`` on stdout (no decoding)."""
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *input_args(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-progress", "pipe:1", "-nostats", "-",
    ]


def probe(
    path: Path | str,
    *,
    max_seconds: float | None = None,
    max_pixels: int | None = None,
    count_frames: bool = False,
    max_fps: float | None = None,
    max_frames: int | None = None,
    tools: FFmpegTools | None = None,
) -> VideoInfo:
    """Describe the video at ``path``; ``UnsupportedMedia`` if it is not a readable video, ``MediaTooLarge`` over limits.

    ``max_frames`` counts the packets (no decoding) unless the container's own count is exact."""
    path = Path(path)
    tools = tools or find_ffmpeg()
    container = _probe_container(path, tools)
    video = container.first("video")
    counted = None
    if video is not None and video.duration is None and container.duration is None:
        counted = _count_frames(path, tools)  # e.g. animated WebP: no duration in the header
    info = _video_info(path, container, counted)
    if max_pixels is not None and info.width * info.height > max_pixels:
        raise MediaTooLarge(
            f"{path.name} is {info.width}x{info.height}, more than the {max_pixels:,} pixels allowed.",
            hint="Send a smaller (e.g. 1080p or 720p) version of the clip.",
        )
    if max_seconds is not None and info.duration > max_seconds:
        raise MediaTooLarge(
            f"{path.name} is {info.duration:.1f} s long; the limit is {max_seconds:g} s.",
            hint="Trim the clip to the part you want and send that.",
        )
    if max_fps is not None and float(info.fps) > max_fps:
        raise MediaTooLarge(
            f"{path.name} runs at {float(info.fps):g} frames per second; the limit is {max_fps:g}.",
            hint="Export it at a normal frame rate (30 or 60 fps) and send that.",
        )
    count_frames = count_frames or max_frames is not None  # never trust a header's durations for a cap
    if count_frames and not info.frame_count_exact:
        counted = _count_frames(path, tools)
        info = replace(info, frame_count=counted, frame_count_exact=True)
    if max_frames is not None and info.frame_count > max_frames:
        raise MediaTooLarge(
            f"{path.name} has {info.frame_count:,} frames; the limit is {max_frames:,}.",
            hint="Trim the clip or export it at a normal frame rate (30 or 60 fps), then send it again.",
        )
    if info.frame_count <= 0:
        raise UnsupportedMedia(f"{path.name} has no video frames.", hint="Send a clip that plays in a video player.")
    return info


def _file_url(path: Path) -> str:
    # "file:" stops ffmpeg from reading a name such as "http:x.mp4" or "-y" as a protocol or an option.
    return f"file:{Path(path).absolute()}"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise UnsupportedMedia(f"{path.name} does not exist.", hint="Check the file name and send it again.")
    if not path.is_file():
        raise UnsupportedMedia(f"{path.name} is not a file.", hint="Send a video file.")
    if path.stat().st_size == 0:
        raise UnsupportedMedia(f"{path.name} is empty (0 bytes).", hint="The upload failed; send the video again.")


def _probe_container(path: Path, tools: FFmpegTools, formats: frozenset[str] = _PROBE_FORMATS) -> ContainerReport:
    """Read a file's streams with ffprobe or ``ffmpeg -i``; refuses what ffmpeg cannot open or we must not open."""
    _check_file(path)
    if tools.ffprobe:
        done = _run(ffprobe_command(tools.ffprobe, path, formats), _PROBE_TIMEOUT_S, path)
        if done.returncode != 0:
            raise _unreadable(path, done.stderr)
        try:
            container = parse_ffprobe_json(json.loads(done.stdout or "{}"))
        except (ValueError, TypeError) as exc:
            raise _unreadable(path, f"unexpected ffprobe output: {exc}") from None
    else:
        done = _run(ffmpeg_probe_command(tools.ffmpeg, path, formats), _PROBE_TIMEOUT_S, path)
        if "Input #0" not in done.stderr:
            raise _unreadable(path, done.stderr)
        container = parse_ffmpeg_report(done.stderr)
    if container.format_name.startswith("mov,mp4"):
        _check_mp4_complete(path)
    return container


def _run(cmd: list[str], timeout: float, path: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise UnsupportedMedia(
            f"{path.name} took more than {timeout:.0f} s to inspect.", hint="Send a shorter or simpler clip."
        ) from None


def _unreadable(path: Path, stderr: str) -> UnsupportedMedia:
    log.debug("ffmpeg refused %s: %s", path, _tail(stderr, _STDERR_TAIL_LINES))
    if "Permission denied" in stderr:
        return UnsupportedMedia(f"{path.name} cannot be read (permission denied).", hint="Check the file's permissions.")
    reason = _reason(stderr)
    return UnsupportedMedia(
        f"{path.name} is not a video famswap can read; it may be corrupt, truncated or another kind of file{reason}.",
        hint="Send an MP4, MOV, MKV or WebM video that plays in a video player.",
    )


def _reason(stderr: str) -> str:
    """ffmpeg's known complaint as `` (ffmpeg: ...)``: its raw lines name server paths, so users get only this."""
    found = re.search(
        r"(moov atom not found|Invalid data found when processing input|[Tt]runcat\w+|End of file|"
        r"Invalid NAL unit size|corrupt\w*|partial file)",
        stderr,
    )
    return f" (ffmpeg: {found.group(1)})" if found else ""


def _tail(text: str, lines: int) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def _check_mp4_complete(path: Path) -> None:
    """Walk the top-level MP4 boxes: a box running past the end of the file means the upload was cut short.

    ffmpeg happily probes a "fast start" MP4 whose media data was truncated (the index comes first), so this
    catches what the probe alone misses; the walk reads a few bytes per box.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        offset = 0
        while offset < size:
            fh.seek(offset)
            header = fh.read(16)
            if len(header) < 8:
                break  # trailing padding shorter than a box header: tolerated, as players do
            box_size = int.from_bytes(header[:4], "big")
            if box_size == 1 and len(header) == 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:
                return  # "extends to the end of the file"
            if box_size < 8 or offset + box_size > size:
                raise UnsupportedMedia(
                    f"{path.name} is truncated: the file ends before its video data does.",
                    hint="The upload or download was cut short; send the complete file again.",
                )
            offset += box_size


def _count_frames(path: Path, tools: FFmpegTools) -> int:
    # Packets are counted, not decoded frames: on every clip in shared/media both agree, at 1/20 of the time.
    done = _run(count_frames_command(tools.ffmpeg, path), 300.0, path)
    counts = re.findall(r"^frame=(\d+)", done.stdout, flags=re.M)
    if done.returncode != 0 or not counts:
        raise _unreadable(path, done.stderr)
    return int(counts[-1])


def _video_info(path: Path, container: ContainerReport, counted: int | None = None) -> VideoInfo:
    name = path.name
    fmt = container.format_name
    video = container.first("video")
    if fmt == "image2" or fmt.endswith(_STILL_FORMATS_SUFFIX):
        raise UnsupportedMedia(f"{name} is a still image, not a video.", hint="Send a video clip (MP4, MOV, WebM).")
    if video is None:
        audio_only = container.first("audio") is not None
        raise UnsupportedMedia(
            f"{name} has no video stream" + (" (it is an audio file)." if audio_only else "."),
            hint="Send a video clip (MP4, MOV, WebM).",
        )
    if fmt not in ALLOWED_FORMATS:
        raise UnsupportedMedia(
            f"{name} is a {fmt.split(',')[0]} file, which famswap does not read.",
            hint="Send an MP4, MOV, MKV or WebM video.",
        )
    if not video.width or not video.height:
        raise UnsupportedMedia(f"{name} has a video stream without a frame size.", hint="Re-export the clip.")
    if not video.fps or video.fps <= 0:
        raise UnsupportedMedia(f"{name} does not say its frame rate.", hint="Re-export the clip as MP4.")

    sar = video.sar if video.sar and video.sar > 0 else Fraction(1)
    width, height = video.width, video.height
    if sar != 1:
        width = max(2, round(width * sar / 2) * 2)
    rotation = int(round(video.rotation / 90.0)) * 90 % 360
    if rotation in (90, 270):
        width, height = height, width

    start_offset = 0.0
    if video.start is not None and container.start is not None:
        start_offset = max(0.0, video.start - container.start)
    duration = video.duration
    if duration is None and container.duration is not None:
        duration = max(0.0, container.duration - start_offset)
    if duration is None and counted is not None:
        duration = counted / float(video.fps)
    if duration is None:
        raise UnsupportedMedia(f"{name} does not say how long it is.", hint="Re-export the clip as MP4.")

    if counted is not None:
        frame_count, exact = counted, True
    elif video.nb_frames:
        frame_count, exact = video.nb_frames, True
    else:
        frame_count, exact = int(round(duration * float(video.fps))), False
    audio = container.first("audio")
    return VideoInfo(
        path=path,
        width=width,
        height=height,
        fps=video.fps,
        frame_count=frame_count,
        duration=duration,
        rotation=rotation,
        has_audio=audio is not None,
        video_codec=video.codec,
        audio_codec=audio.codec if audio else None,
        bit_rate=container.bit_rate,
        audio_bit_rate=audio.bit_rate if audio else None,
        frame_count_exact=exact,
        container=fmt,
        start_offset=start_offset,
        sample_aspect=sar,
        tags=dict(container.tags),
    )


# --- parsers (pure) -------------------------------------------------------------------------------------------

_INPUT_RE = re.compile(r"^Input #0, (.+?), from '")
_DURATION_RE = re.compile(
    r"^\s+Duration: (?:N/A|(\d+):(\d+):(\d+(?:\.\d+)?))(?:, start: (-?\d+(?:\.\d+)?))?"
    r"(?:, bitrate: (?:N/A|(\d+) kb/s))?"
)
_STREAM_RE = re.compile(r"^\s+Stream #0:\d+(?:\[[^\]]*\])?(?:\([^)]*\))?: (\w+): (.*)$")
_TAG_RE = re.compile(r"^(\s+)([^:]*?)\s*: (.*)$")
_ROTATION_RE = re.compile(r"(?:Display Matrix|displaymatrix): rotation of (-?\d+(?:\.\d+)?) degrees", re.I)
_SIZE_RE = re.compile(r"^(\d+)x(\d+)(?: \[SAR (\d+):(\d+) DAR \d+:\d+\])?")
_RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)(k?) (fps|tbr)\b")
_KBPS_RE = re.compile(r"^(\d+) kb/s\b")
_START_RE = re.compile(r"^start (-?\d+(?:\.\d+)?)")


def parse_ffmpeg_report(stderr: str) -> ContainerReport:
    """Parse the input report ``ffmpeg -i FILE`` prints (format, duration, global tags, streams)."""
    fmt = ""
    duration = start = None
    bit_rate = None
    tags: dict[str, str] = {}
    streams: list[StreamReport] = []
    section = ""  # "global-meta", "stream", or ""
    last_key = ""
    for line in stderr.splitlines():
        if not fmt:
            match = _INPUT_RE.match(line)
            if match:
                fmt = match.group(1)
            continue
        if line.startswith(("Input #", "Output #", "Stream mapping")):
            break  # a second input or the output section: not ours
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if indent == 2 and stripped == "Metadata:" and not streams:
            section = "global-meta"
            continue
        if section == "global-meta" and indent >= 4:
            match = _TAG_RE.match(line)
            if match:
                key, value = match.group(2).strip(), match.group(3)
                if key:
                    tags[key] = value
                    last_key = key
                elif last_key:  # continuation line of a multi-line value
                    tags[last_key] += "\n" + value
            continue
        match = _DURATION_RE.match(line)
        if match and indent == 2:
            section = ""
            if match.group(1) is not None:
                duration = int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))
            if match.group(4) is not None:
                start = float(match.group(4))
            if match.group(5) is not None:
                bit_rate = int(match.group(5)) * 1000
            continue
        match = _STREAM_RE.match(line)
        if match:
            section = "stream"
            streams.append(_parse_stream_line(match.group(1).lower(), match.group(2)))
            continue
        if section == "stream" and streams:
            match = _ROTATION_RE.search(line)
            if match:
                streams[-1].rotation = float(match.group(1))
        elif indent <= 2:
            section = ""
    return ContainerReport(fmt, duration, start, bit_rate, tags, streams)


def _split_top(text: str) -> list[str]:
    """Split on ", " outside parentheses and brackets (``yuv420p(tv, bt709)`` stays one item)."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        if depth == 0 and text.startswith(", ", i):
            items.append("".join(current))
            current = []
            i += 2
            continue
        current.append(ch)
        i += 1
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def _parse_stream_line(kind: str, rest: str) -> StreamReport:
    codec_match = re.match(r"([\w-]+)", rest)
    stream = StreamReport(kind=kind, codec=codec_match.group(1) if codec_match else "unknown")
    stream.attached_pic = "(attached pic)" in rest
    fps: Fraction | None = None
    tbr: Fraction | None = None
    for item in _split_top(rest)[1:]:
        match = _SIZE_RE.match(item)
        if match and stream.width is None:
            stream.width, stream.height = int(match.group(1)), int(match.group(2))
            if match.group(3):
                stream.sar = Fraction(int(match.group(3)), max(1, int(match.group(4))))
            continue
        match = _RATE_RE.match(item)
        if match:
            rate = Fraction(match.group(1)) * (1000 if match.group(2) else 1)
            if match.group(3) == "fps":
                fps = rate
            else:
                tbr = rate
            continue
        match = _KBPS_RE.match(item)
        if match:
            stream.bit_rate = int(match.group(1)) * 1000
            continue
        match = _START_RE.match(item)
        if match:
            stream.start = float(match.group(1))
    best = fps or tbr
    if best:
        stream.fps = snap_frame_rate(best)
    return stream


def snap_frame_rate(rate: Fraction | float | str) -> Fraction:
    """Exact rate from a printed one: ``29.97`` means 30000/1001 (ffmpeg prints two decimals), ``25`` stays 25."""
    value = Fraction(rate) if not isinstance(rate, float) else Fraction(str(rate))
    if value.denominator == 1:
        return value
    for base in _NTSC_BASES:
        ntsc = Fraction(base * 1000, 1001)
        if abs(value - ntsc) < Fraction(1, 100):
            return ntsc
    return value.limit_denominator(1001)


def parse_ffprobe_json(data: Mapping[str, Any]) -> ContainerReport:
    """Turn ``ffprobe -show_format -show_streams -print_format json`` output into the same record."""
    fmt = data.get("format", {}) or {}
    streams = []
    for raw in data.get("streams", []) or []:
        kind = str(raw.get("codec_type", "data"))
        stream = StreamReport(kind=kind, codec=str(raw.get("codec_name", "unknown")))
        stream.attached_pic = bool((raw.get("disposition") or {}).get("attached_pic"))
        if kind == "video":
            stream.width = _int_or_none(raw.get("width"))
            stream.height = _int_or_none(raw.get("height"))
            stream.sar = _ratio(raw.get("sample_aspect_ratio"))
            rate = _ratio(raw.get("avg_frame_rate")) or _ratio(raw.get("r_frame_rate"))
            stream.fps = rate if rate else None
            stream.nb_frames = _int_or_none(raw.get("nb_frames"))
            rotation = 0.0
            for side in raw.get("side_data_list", []) or []:
                if "rotation" in side:
                    rotation = float(side["rotation"])
            if not rotation and "rotate" in (raw.get("tags") or {}):
                # The legacy tag counts clockwise; the display matrix counter-clockwise.
                rotation = -float(raw["tags"]["rotate"])
            stream.rotation = rotation
        stream.duration = _float_or_none(raw.get("duration"))
        stream.start = _float_or_none(raw.get("start_time"))
        stream.bit_rate = _int_or_none(raw.get("bit_rate"))
        streams.append(stream)
    return ContainerReport(
        format_name=str(fmt.get("format_name", "")),
        duration=_float_or_none(fmt.get("duration")),
        start=_float_or_none(fmt.get("start_time")),
        bit_rate=_int_or_none(fmt.get("bit_rate")),
        tags={str(k): str(v) for k, v in (fmt.get("tags") or {}).items()},
        streams=streams,
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float_or_none(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _ratio(value: Any) -> Fraction | None:
    if not value or not isinstance(value, str):
        return None
    try:
        num, _, den = value.partition(":") if ":" in value else value.partition("/")
        if not den:
            return Fraction(num)
        if int(den) == 0:
            return None
        result = Fraction(int(num), int(den))
    except (ValueError, ZeroDivisionError):
        return None
    return result if result > 0 else None


# --------------------------------------------------------------------------------------------------------------
# Reading frames
# --------------------------------------------------------------------------------------------------------------


def passthrough_args(release: Release = SNAPSHOT) -> list[str]:
    """One output frame per decoded frame, never duplicated or dropped to fit a nominal rate.

    ``-fps_mode`` exists from ffmpeg 5.1; 4.4 (Ubuntu 22.04) only knows ``-vsync``, which 5.1+ deprecate.
    """
    return ["-fps_mode", "passthrough"] if release >= (5, 1) else ["-vsync", "passthrough"]


def read_command(
    ffmpeg: str,
    path: Path,
    *,
    start: float = 0.0,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    fps: Fraction | None = None,
    release: Release = SNAPSHOT,
) -> list[str]:
    """Decode the first video stream to raw RGB24 on stdout (autorotated; optionally seeked, resampled, scaled)."""
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error"]
    if start > 0:
        cmd += ["-ss", f"{start:.6f}"]
    cmd += [*input_args(path), "-map", "0:v:0", "-an", "-sn", "-dn"]
    filters = []
    if fps is not None:
        filters.append(f"fps={_rate(fps)}")
    if size is not None:
        filters.append(f"scale={int(size[0])}:{int(size[1])}:flags=bicubic")
    if filters:
        cmd += ["-vf", ",".join(filters)]
    if max_frames is not None:
        cmd += ["-frames:v", str(int(max_frames))]
    cmd += [*passthrough_args(release), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    return cmd


def read_frames(
    path: Path | str,
    *,
    start: float = 0.0,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    fps: Fraction | int | None = None,
    info: VideoInfo | None = None,
    tools: FFmpegTools | None = None,
) -> Iterator[np.ndarray]:
    """Stream a clip's frames as ``(H, W, 3)`` uint8 RGB arrays, one ffmpeg process per call, constant memory.

    ``start`` seconds, ``max_frames`` cap, ``size=(w, h)`` exact output size, ``fps`` constant-rate resampling.
    Pass ``info`` from an earlier ``probe`` to skip probing again. Raises ``UnsupportedMedia`` now for a bad file,
    and from the iterator if decoding fails midway.
    """
    path = Path(path)
    tools = tools or find_ffmpeg()
    if start < 0:
        raise ValueError("start must be >= 0 seconds")
    if max_frames is not None and max_frames < 0:
        raise ValueError("max_frames must be >= 0")
    info = info or probe(path, tools=tools)
    if size is None and info.sample_aspect != 1:
        size = info.size  # make non-square pixels square, as probe's width promised
    out_w, out_h = size or info.size
    if out_w <= 0 or out_h <= 0:
        raise ValueError(f"size must be positive, got {size}")
    cmd = read_command(
        tools.ffmpeg, path, start=start, max_frames=max_frames, size=size,
        fps=Fraction(fps) if fps is not None else None, release=tools.release,
    )
    return _frame_stream(cmd, out_w, out_h, path.name)


T = TypeVar("T")
_END = object()


def prefetch(items: Iterable[T], depth: int = 8) -> Generator[T, None, None]:
    """``items`` in order, produced up to ``depth`` ahead in a background thread; see the module docstring.

    Made for ``read_frames``: ffmpeg decodes in its own process, but copying each frame out of the pipe takes the
    reading thread's time; here that overlaps whatever the caller does with the previous frames.
    """
    import queue

    if depth < 1:
        raise ValueError("depth must be at least 1")
    box: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # in this thread, which ran it: kills and reaps read_frames' ffmpeg

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True)
class _Failure:
    exc: BaseException


def grow_pipe(fd: int, size: int) -> int:
    """Make the pipe ``fd`` hold up to ``size`` bytes (Linux; capped by /proc/sys/fs/pipe-max-size, 1 MiB by
    default); returns its size, or 0 where that cannot be set.

    A 720p RGB frame is 2.7 MB: through the default 64 KiB pipe that is 42 reads, each giving up and taking back the
    GIL, which another busy Python thread then makes wait; through 1 MiB, 3.
    """
    import fcntl

    setsz = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsz is None:
        return 0
    for want in (max(size, 1 << 16), 1 << 20):  # never below Linux's default 64 KiB
        try:
            return fcntl.fcntl(fd, setsz, want)
        except OSError:
            continue  # over pipe-max-size (EPERM) or not a pipe: try the usual cap, then give up
    return 0


def _frame_stream(cmd: list[str], width: int, height: int, name: str) -> Iterator[np.ndarray]:
    # stderr goes to a temporary file: a pipe nobody reads could fill up and stall ffmpeg (and us with it).
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        grow_pipe(proc.stdout.fileno(), width * height * 3)
        assert proc.stdout is not None
        try:
            while True:
                frame = np.empty((height, width, 3), dtype=np.uint8)
                got = _read_exactly(proc.stdout, memoryview(frame.data).cast("B"))
                if got == 0:
                    break
                if got < frame.nbytes:
                    break  # a partial last frame means ffmpeg stopped early; its exit code says why
                yield frame
            code = proc.wait(timeout=60)
            if code != 0:
                stderr = _read_tail(err)
                log.debug("ffmpeg failed decoding %s: %s", name, stderr)
                raise UnsupportedMedia(
                    f"{name} could not be decoded to the end{_reason(stderr)}.",
                    hint="The file may be damaged; re-export it or send another copy.",
                )
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()


def _read_exactly(stream: IO[bytes], view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _read_tail(err: IO[bytes], lines: int = _STDERR_TAIL_LINES) -> str:
    err.seek(0, os.SEEK_END)
    size = err.tell()
    err.seek(max(0, size - 8192))
    return _tail(err.read().decode("utf-8", "replace"), lines)


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def metadata_args(metadata: Mapping[str, str] | None) -> tuple[list[str], bool]:
    """``-metadata k=v`` arguments, and whether custom keys need ``+use_metadata_tags`` to survive in MP4."""
    args: list[str] = []
    custom = False
    for key, value in (metadata or {}).items():
        if not _KEY_RE.match(key):
            raise ValueError(f"metadata key {key!r} must be letters, digits or underscores")
        args += ["-metadata", f"{key}={value}"]
        custom = custom or key.lower() not in _STANDARD_MP4_KEYS
    return args, custom


def _movflags(custom_tags: bool) -> list[str]:
    return ["-movflags", "+faststart" + ("+use_metadata_tags" if custom_tags else "")]


def _rate(fps: Fraction) -> str:
    return f"{fps.numerator}/{fps.denominator}"


def _as_fraction(fps: Fraction | int | float | str) -> Fraction:
    if isinstance(fps, float):
        return snap_frame_rate(fps)
    value = Fraction(fps)
    if value <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return value


def encode_command(
    ffmpeg: str,
    out_path: Path,
    width: int,
    height: int,
    fps: Fraction,
    *,
    crf: int = 20,
    bitrate: int | None = None,
    preset: str = "veryfast",
    metadata: Mapping[str, str] | None = None,
    final: bool = True,
    release: Release = SNAPSHOT,
) -> list[str]:
    """Raw RGB24 frames on stdin -> H.264 yuv420p BT.709 MP4 at exactly ``fps``.

    ``bitrate`` (bits/s) switches from constant quality (``crf``) to a capped average. ``final=False`` leaves out
    metadata and ``+faststart`` because a second step (``mux_audio_command``) writes the final file.
    """
    vf = []
    if width % 2 or height % 2:
        vf.append("pad=ceil(iw/2)*2:ceil(ih/2)*2")
    # State the RGB->YUV matrix and tag it, so players do not guess BT.601 for some sizes and BT.709 for others.
    vf.append(
        "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
        "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"
    )
    cmd = [
        ffmpeg, "-hide_banner", "-v", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", _rate(fps), "-i", "pipe:0",
        "-map", "0:v:0", "-vf", ",".join(vf),
        "-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p",
    ]
    if bitrate is not None:
        cmd += ["-b:v", str(int(bitrate)), "-maxrate", str(int(bitrate * 1.5)), "-bufsize", str(int(bitrate * 2))]
    else:
        cmd += ["-crf", str(int(crf))]
    cmd += [*passthrough_args(release), "-map_metadata", "-1", "-map_chapters", "-1"]
    if final:
        meta, custom = metadata_args(metadata)
        cmd += [*meta, *_movflags(custom)]
    cmd += ["-f", "mp4", "-y", str(out_path)]
    return cmd


def mux_audio_command(
    ffmpeg: str,
    video_path: Path,
    audio_path: Path,
    out_path: Path,
    *,
    duration: float,
    audio_offset: float = 0.0,
    copy_audio: bool = True,
    audio_bitrate: int = 160_000,
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Copy the video of ``video_path`` and add ``audio_path``'s first audio track from ``audio_offset`` seconds,
    cut to ``duration`` seconds (the video's length) so the audio never outlasts the picture."""
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *input_args(video_path)]
    if audio_offset > 0:
        cmd += ["-ss", f"{audio_offset:.6f}"]
    cmd += [*input_args(audio_path, AUDIO_FORMATS), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy"]
    cmd += ["-c:a", "copy"] if copy_audio else ["-c:a", "aac", "-b:a", str(int(audio_bitrate))]
    meta, custom = metadata_args(metadata)
    cmd += ["-t", f"{float(duration):.6f}", "-map_metadata", "-1", "-map_chapters", "-1", *meta, *_movflags(custom)]
    cmd += ["-f", "mp4", "-y", str(out_path)]
    return cmd


def _temp_sibling(path: Path, tag: str) -> Path:
    # Same folder as the destination, so the final rename is atomic; hidden so nobody picks up a half file.
    return path.with_name(f".{path.name}.{tag}-{secrets.token_hex(4)}.part")


class VideoWriter:
    """Encode RGB frames to an MP4 file; see the module docstring. Use as a context manager:

    >>> with VideoWriter(out, w, h, info.fps, audio_from=src) as writer:   # doctest: +SKIP
    ...     for frame in frames:
    ...         writer.write(frame)
    """

    def __init__(
        self,
        path: Path | str,
        width: int,
        height: int,
        fps: Fraction | int | float | str,
        *,
        audio_from: Path | None = None,
        audio_start: float = 0.0,
        bitrate: int | None = None,
        crf: int = 20,
        metadata: Mapping[str, str] | None = None,
        preset: str = "veryfast",
        tools: FFmpegTools | None = None,
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.fps = _as_fraction(fps)
        self.metadata = dict(metadata or {})
        metadata_args(self.metadata)  # validate the keys now, not after a long encode
        self._tools = tools or find_ffmpeg()
        if not self._tools.has_encoder("libx264"):
            raise EncodeError(
                f"{self._tools.ffmpeg} has no libx264 H.264 encoder.",
                hint="Install an ffmpeg built with libx264, or take it off the PATH so the bundled one is used.",
            )
        self._audio: ContainerReport | None = None
        self._audio_path = Path(audio_from) if audio_from is not None else None
        self._audio_offset = max(0.0, float(audio_start))
        if self._audio_path is not None:
            container = _probe_container(self._audio_path, self._tools, AUDIO_FORMATS)
            if container.first("audio") is not None:
                self._audio = container
                video = container.first("video")
                if video is not None and video.start is not None and container.start is not None:
                    # read_frames' first frame is the first video frame at or after `start`; audio must match it.
                    self._audio_offset = max(self._audio_offset, video.start - container.start)
        self._frames = 0
        self._closed = False
        self._video_tmp = _temp_sibling(self.path, "video")
        self._mux_tmp = _temp_sibling(self.path, "mux")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cmd = encode_command(
            self._tools.ffmpeg, self._video_tmp, self.width, self.height, self.fps, crf=crf, bitrate=bitrate,
            preset=preset, metadata=self.metadata, final=self._audio is None, release=self._tools.release,
        )
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err)
        assert self._proc.stdin is not None
        grow_pipe(self._proc.stdin.fileno(), self.width * self.height * 3)

    @property
    def frames_written(self) -> int:
        return self._frames

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(height, width, 3)`` uint8 RGB frame."""
        if self._closed:
            raise ValueError("write() on a closed VideoWriter")
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"frame must be ({self.height}, {self.width}, 3) uint8, got {frame.shape} {frame.dtype}"
            )
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, OSError):
            self._proc.wait()
            tail = _read_tail(self._err)
            self.abort()
            raise EncodeError(
                f"ffmpeg stopped while encoding {self.path.name} after {self._frames} frames ({tail}).",
                hint="See the ffmpeg message; check free disk space.",
            ) from None
        self._frames += 1

    def close(self) -> Path:
        """Finish the file: flush the encoder, add the audio, rename into place. Returns the final path."""
        if self._closed:
            return self.path
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            code = self._proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            self.abort()
            raise EncodeError(f"ffmpeg did not finish {self.path.name} within 10 minutes.") from None
        tail = _read_tail(self._err)
        if code != 0 or self._frames == 0:
            self.abort()
            what = "no frames were written" if self._frames == 0 else f"ffmpeg exited with {code}: {tail}"
            raise EncodeError(f"Could not encode {self.path.name}: {what}.", hint="See the ffmpeg message above.")
        try:
            if self._audio is not None and self._audio_path is not None:
                audio = self._audio.first("audio")
                assert audio is not None
                cmd = mux_audio_command(
                    self._tools.ffmpeg, self._video_tmp, self._audio_path, self._mux_tmp,
                    duration=float(self._frames / self.fps), audio_offset=self._audio_offset,
                    copy_audio=audio.codec == "aac", metadata=self.metadata,
                )
                _run_encode(cmd, self.path.name, timeout=600)
                os.replace(self._mux_tmp, self.path)
                self._video_tmp.unlink(missing_ok=True)
            else:
                os.replace(self._video_tmp, self.path)
        except BaseException:
            self.abort()
            raise
        finally:
            self._err.close()
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and delete the partial output; the destination is left untouched."""
        self._closed = True
        if self._proc.poll() is None:
            self._proc.kill()
        if self._proc.stdin:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        self._proc.wait()
        self._video_tmp.unlink(missing_ok=True)
        self._mux_tmp.unlink(missing_ok=True)
        if not self._err.closed:
            self._err.close()

    def __del__(self) -> None:
        # A writer dropped without close() (an exception outside a `with`) must not leave ffmpeg waiting on stdin.
        if not getattr(self, "_closed", True):
            try:
                self.abort()
            except Exception:  # noqa: BLE001 - never raise from a finalizer
                pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _run_encode(cmd: list[str], name: str, *, timeout: float) -> None:
    try:
        done = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise EncodeError(f"ffmpeg took more than {timeout:.0f} s on {name}.") from None
    if done.returncode != 0:
        raise EncodeError(
            f"ffmpeg could not write {name} (exit {done.returncode}): {_tail(done.stderr, _STDERR_TAIL_LINES)}",
            hint="See the ffmpeg message.",
        )


# --------------------------------------------------------------------------------------------------------------
# Fitting a file under a size
# --------------------------------------------------------------------------------------------------------------

# Short-side sizes tried, largest first, until enough bits per pixel remain.
_LADDER = (1080, 720, 540, 480, 360, 270, 240)
_MIN_BITS_PER_PIXEL = 0.045  # below this, veryfast H.264 of camera footage turns to mush; shrink instead
_MIN_VIDEO_BPS = 40_000
_MIN_AUDIO_BPS = 32_000
_FROM_INFO = "<from info>"


@dataclass(frozen=True)
class FitPlan:
    """Numbers for one re-encode attempt: output size, video and audio bitrates (bits/s)."""

    width: int
    height: int
    video_bitrate: int
    audio_bitrate: int | None  # None: no audio in the output
    copy_audio: bool


@dataclass(frozen=True)
class FitResult:
    """What ``fit_to_size`` produced."""

    path: Path
    size_bytes: int
    width: int
    height: int
    video_bitrate: int | None  # None when the source was copied
    audio_bitrate: int | None
    attempts: int  # encodes run (0 when copied)
    copied: bool


def plan_fit(
    info: VideoInfo,
    max_bytes: int,
    *,
    duration: float | None = None,
    audio_codec: str | None = _FROM_INFO,
    audio_bit_rate: int | None = None,
    scale: float = 1.0,
) -> FitPlan:
    """Choose size and bitrates so ``duration`` seconds of ``info``'s video fit ``max_bytes`` (pure).

    The audio is ``info``'s unless ``audio_codec`` (None: no audio) and ``audio_bit_rate`` are given. Reserves 4%
    plus a per-frame estimate for the MP4 container. ``scale`` (<1 on retries) shrinks the video budget. Raises
    ``EncodeError`` when not even the smallest picture fits beside the audio.
    """
    if audio_codec == _FROM_INFO:
        audio_codec, audio_bit_rate = info.audio_codec, info.audio_bit_rate
    seconds = max(duration if duration is not None else info.duration, 1.0 / float(info.fps))
    frames = seconds * float(info.fps)
    overhead = 4096 + frames * 16 + seconds * 400  # moov sample tables, audio packet headers
    total_bps = (max_bytes * 0.96 - overhead) * 8 / seconds
    has_audio = audio_codec is not None
    audio_bps = 0
    copy_audio = False
    if has_audio:
        audio_bps = int(min(128_000, max(_MIN_AUDIO_BPS, total_bps * 0.1)) // 8000 * 8000)
        if audio_codec == "aac" and audio_bit_rate and audio_bit_rate <= audio_bps:
            copy_audio, audio_bps = True, int(audio_bit_rate * 1.05) + 1000
    video_bps = int((total_bps - audio_bps) * scale)
    if video_bps < _MIN_VIDEO_BPS and has_audio and not copy_audio and audio_bps > _MIN_AUDIO_BPS:
        audio_bps = _MIN_AUDIO_BPS
        video_bps = int((total_bps - audio_bps) * scale)
    if video_bps < _MIN_VIDEO_BPS:
        need = (_MIN_VIDEO_BPS + (audio_bps if has_audio else 0)) * seconds / 8 / 0.96 + overhead
        raise EncodeError(
            f"{info.path.name} ({seconds:.1f} s) cannot fit in {max_bytes / 1e6:.2f} MB: "
            f"even a tiny picture needs about {need / 1e6:.2f} MB.",
            hint=f"Use a shorter clip: about {max(1.0, seconds * max_bytes / need):.0f} s fit.",
        )

    width, height = info.width, info.height
    short = min(width, height)
    rate = float(info.fps)
    chosen = short
    for rung in (short, *[r for r in _LADDER if r < short]):
        chosen = rung
        w, h = _scaled(width, height, rung)
        if video_bps / (w * h * rate) >= _MIN_BITS_PER_PIXEL:
            break
    w, h = _scaled(width, height, chosen)
    return FitPlan(w, h, video_bps, audio_bps if has_audio else None, copy_audio)


def _scaled(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Size with the short side ``short_side``, aspect kept, both even."""
    factor = short_side / min(width, height)
    return max(2, round(width * factor / 2) * 2), max(2, round(height * factor / 2) * 2)


def fit_command(
    ffmpeg: str,
    src: Path,
    out_path: Path,
    plan: FitPlan,
    *,
    audio_from: Path | None = None,
    preset: str = "veryfast",
    metadata: Mapping[str, str] | None = None,
    release: Release = SNAPSHOT,
) -> list[str]:
    """Re-encode ``src`` at ``plan``'s size and capped bitrate (``-maxrate`` = target, 1 s buffer), frame for frame
    (without passthrough, ffmpeg 5.1's constant-rate default duplicates frames up to the container's duration:
    95 frames out of a 92-frame clip)."""
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *input_args(src)]
    audio_input = 0
    if audio_from is not None and plan.audio_bitrate is not None:
        cmd += input_args(audio_from, AUDIO_FORMATS)
        audio_input = 1
    cmd += ["-map", "0:v:0"]
    if plan.audio_bitrate is not None:
        cmd += ["-map", f"{audio_input}:a:0"]
    cmd += ["-vf", f"scale={plan.width}:{plan.height}:flags=bicubic,setsar=1,format=yuv420p"]
    v = plan.video_bitrate
    cmd += ["-c:v", "libx264", "-preset", preset, "-b:v", str(v), "-maxrate", str(v), "-bufsize", str(v)]
    cmd += passthrough_args(release)
    if plan.audio_bitrate is None:
        cmd += ["-an"]
    elif plan.copy_audio:
        cmd += ["-c:a", "copy"]
    else:
        cmd += ["-c:a", "aac", "-b:a", str(plan.audio_bitrate)]
    if audio_input:
        cmd += ["-shortest"]
    meta, custom = metadata_args(metadata)
    cmd += ["-map_metadata", "-1", "-map_chapters", "-1", *meta, *_movflags(custom), "-f", "mp4", "-y", str(out_path)]
    return cmd


_CONTAINER_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder", "creation_time"})


def fit_to_size(
    src: Path | str,
    dst: Path | str,
    max_bytes: int,
    *,
    audio_from: Path | None = None,
    metadata: Mapping[str, str] | None = None,
    preset: str = "veryfast",
    max_attempts: int = 3,
    tools: FFmpegTools | None = None,
) -> FitResult:
    """Write ``dst``: ``src`` itself when it fits ``max_bytes``, else a smaller re-encode (see module docstring).

    The source's own tags (e.g. the AI-swap ``comment`` from ``VideoWriter``) are kept, ``metadata`` added on top.
    ``audio_from`` replaces the audio with another file's first audio track.
    """
    src, dst = Path(src), Path(dst)
    tools = tools or find_ffmpeg()
    container = _probe_container(src, tools)
    info = _video_info(src, container)
    tags = {k: v for k, v in info.tags.items() if k not in _CONTAINER_TAGS and _KEY_RE.match(k)}
    tags.update(metadata or {})
    dst.parent.mkdir(parents=True, exist_ok=True)

    if src.stat().st_size <= max_bytes and audio_from is None:
        if metadata:
            # Rewriting the tags is a remux: cheap, and it only adds a few bytes.
            tmp = _temp_sibling(dst, "fit")
            meta, custom = metadata_args(tags)
            cmd = [
                tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *input_args(src), "-map", "0", "-c", "copy", "-map_metadata", "-1", *meta, *_movflags(custom),
                "-f", "mp4", "-y", str(tmp),
            ]
            try:
                _run_encode(cmd, dst.name, timeout=300)
                if tmp.stat().st_size <= max_bytes:
                    os.replace(tmp, dst)
                    return FitResult(dst, dst.stat().st_size, info.width, info.height, None, None, 0, True)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            tmp = _temp_sibling(dst, "fit")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
            return FitResult(dst, dst.stat().st_size, info.width, info.height, None, None, 0, True)

    audio_codec, audio_rate = info.audio_codec, info.audio_bit_rate
    if audio_from is not None:
        audio = _probe_container(Path(audio_from), tools, AUDIO_FORMATS).first("audio")
        audio_codec = audio.codec if audio else None
        audio_rate = audio.bit_rate if audio else None
    # The whole file's length counts: audio may start before the first frame or run past the last.
    duration = max(info.duration + info.start_offset, container.duration or 0.0)
    scale = 1.0
    size = 0
    for attempt in range(1, max_attempts + 1):
        plan = plan_fit(info, max_bytes, duration=duration, audio_codec=audio_codec, audio_bit_rate=audio_rate,
                        scale=scale)
        tmp = _temp_sibling(dst, "fit")
        try:
            cmd = fit_command(tools.ffmpeg, src, tmp, plan, audio_from=audio_from, preset=preset, metadata=tags,
                              release=tools.release)
            _run_encode(cmd, dst.name, timeout=1800)
            size = tmp.stat().st_size
            if size <= max_bytes:
                os.replace(tmp, dst)
                return FitResult(dst, size, plan.width, plan.height, plan.video_bitrate, plan.audio_bitrate,
                                 attempt, False)
        finally:
            tmp.unlink(missing_ok=True)
        # Over by x%: aim the video part lower by a bit more than that.
        scale *= 0.92 * max_bytes / size
    raise EncodeError(
        f"Could not bring {src.name} under {max_bytes / 1e6:.2f} MB in {max_attempts} tries "
        f"(last: {size / 1e6:.2f} MB).",
        hint="Use a shorter clip or a larger size limit.",
    )


# --------------------------------------------------------------------------------------------------------------
# Before/after animation
# --------------------------------------------------------------------------------------------------------------

AnimationKind = Literal["gif", "webp"]
_SEPARATOR_PX = 4


def animation_command(
    ffmpeg: str,
    out_path: Path,
    width: int,
    height: int,
    fps: int | Fraction,
    *,
    out_height: int,
    kind: AnimationKind,
) -> list[str]:
    """Raw RGB24 panels on stdin -> looping GIF (own 64-colour palette, no dithering: small) or lossy WebP.

    Built with ffmpeg-python's graph API: the GIF's scale → split → palettegen → paletteuse graph reads as the
    graph it is, and ``.compile()`` still gives the argument list (tested without running ffmpeg)."""
    import ffmpeg as ff  # ffmpeg-python: only builds argument lists, never runs anything

    panels = ff.input("pipe:0", f="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=_rate(Fraction(fps)))
    scaled = panels.video.filter("scale", -2, int(out_height), flags="lanczos")
    if kind == "gif":
        frames = scaled.split()
        palette = frames[0].filter("palettegen", max_colors=64, stats_mode="full")
        graph = ff.filter([frames[1], palette], "paletteuse", dither="none", diff_mode="rectangle")
        out = graph.output(str(out_path), f="gif", loop=0)
    else:
        out = scaled.output(str(out_path), **{"c:v": "libwebp_anim"}, quality=60, loop=0, f="webp")
    return [str(arg) for arg in out.overwrite_output().compile(cmd=[ffmpeg, "-hide_banner", "-v", "error"])]


def _pick(count: int, limit: int) -> list[int]:
    """At most ``limit`` indices spread evenly over ``range(count)``, in order."""
    if count <= limit:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, limit)})


def comparison_animation(
    before: Sequence[np.ndarray],
    after: Sequence[np.ndarray],
    out_path: Path | str,
    *,
    height: int = 240,
    fps: int = 10,
    max_frames: int = 30,
    max_bytes: int | None = 512_000,
    tools: FFmpegTools | None = None,
) -> Path:
    """A looping side-by-side animation, before on the left, after on the right; ``.gif`` or ``.webp`` by suffix.

    Frames are RGB uint8; pairs are cropped to a common size. At most ``max_frames`` pairs, spread evenly over the
    sequences. If the file comes out over ``max_bytes`` it is redone smaller (height, then frames) up to 3 times.
    """
    out_path = Path(out_path)
    kind: AnimationKind
    suffix = out_path.suffix.lower()
    if suffix == ".gif":
        kind = "gif"
    elif suffix == ".webp":
        kind = "webp"
    else:
        raise ValueError(f"comparison_animation writes .gif or .webp, not {out_path.name}")
    count = min(len(before), len(after))
    if count == 0:
        raise ValueError("comparison_animation needs at least one before/after pair")
    tools = tools or find_ffmpeg()
    frames = [(before[i], after[i]) for i in range(count)]
    h = min(min(b.shape[0], a.shape[0]) for b, a in frames)
    w = min(min(b.shape[1], a.shape[1]) for b, a in frames)
    panel_w, panel_h = 2 * w + _SEPARATOR_PX, h
    out_h = min(height, panel_h)
    limit = max(1, max_frames)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(4):
        picked = _pick(count, limit)
        tmp = _temp_sibling(out_path, "anim")
        cmd = animation_command(tools.ffmpeg, tmp, panel_w, panel_h, fps, out_height=max(2, out_h), kind=kind)
        try:
            _feed(cmd, (_panel(frames[i][0], frames[i][1], w, h) for i in picked), out_path.name)
            size = tmp.stat().st_size
            if max_bytes is None or size <= max_bytes or (out_h <= 64 and len(picked) <= 2):
                os.replace(tmp, out_path)
                return out_path
        finally:
            tmp.unlink(missing_ok=True)
        shrink = max_bytes / size * 0.9
        if out_h > 96:
            out_h = max(96, int(out_h * math.sqrt(shrink)) // 2 * 2)
        else:
            limit = max(2, int(len(picked) * shrink))
    raise EncodeError(f"Could not make {out_path.name} smaller than {max_bytes:,} bytes.")


def _panel(before: np.ndarray, after: np.ndarray, width: int, height: int) -> np.ndarray:
    separator = np.full((height, _SEPARATOR_PX, 3), 255, dtype=np.uint8)
    return np.ascontiguousarray(
        np.concatenate([before[:height, :width, :3], separator, after[:height, :width, :3]], axis=1), dtype=np.uint8
    )


def _feed(cmd: list[str], panels: Iterator[np.ndarray], name: str) -> None:
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        assert proc.stdin is not None
        try:
            for panel in panels:
                proc.stdin.write(panel.data)
            proc.stdin.close()
            code = proc.wait(timeout=300)
        except (BrokenPipeError, OSError):
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0:
            raise EncodeError(f"ffmpeg could not write {name}: {_read_tail(err)}.")
