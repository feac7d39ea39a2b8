"""Tiny test clips made on the spot with the project's ffmpeg (never committed): odd frame rates and sizes."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from swap_engine.ffmpeg_bin import find_ffmpeg


def make_clip(path: Path, *, size: tuple[int, int] = (64, 64), fps: int = 30, frames: int = 10) -> Path:
    """An H.264 MP4 of ffmpeg's test pattern: ``frames`` frames at ``fps``, ``size`` (w, h)."""
    cmd = [
        find_ffmpeg().ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size[0]}x{size[1]}:rate={fps}",
        "-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path),
    ]
    subprocess.run(cmd, check=True, timeout=120)
    return path


def shrink_durations(data: bytes, factor: int) -> bytes:
    """The MP4 with every duration in its headers (mvhd, tkhd, mdhd) divided by ``factor``: it claims to be short,
    its frames are all still there."""
    out = bytearray(data)
    for name, offset_v0, offset_v1 in ((b"mvhd", 16, 24), (b"tkhd", 20, 28), (b"mdhd", 16, 24)):
        start = 0
        while (at := out.find(name, start)) != -1:
            body = at + 4
            if out[body] == 0:
                (value,) = struct.unpack_from(">I", out, body + offset_v0)
                struct.pack_into(">I", out, body + offset_v0, max(1, value // factor))
            else:
                (value,) = struct.unpack_from(">Q", out, body + offset_v1)
                struct.pack_into(">Q", out, body + offset_v1, max(1, value // factor))
            start = at + 4
    return bytes(out)
