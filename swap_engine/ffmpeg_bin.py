"""Find the ffmpeg (and ffprobe) executables famswap runs: the system's first, else imageio-ffmpeg's bundled one.

Contract:
- ``find_ffmpeg(path_env=None) -> FFmpegTools``. ``path_env`` is a PATH-style string searched instead of the
  process's ``PATH`` (tests pass their own; the result is cached per distinct string for the process's life).
- A system ``ffmpeg`` found on the PATH wins (``source="system"``), with the ``ffprobe`` beside it on the PATH when
  there is one. Otherwise the binary shipped in the ``imageio-ffmpeg`` wheel is used (``source="bundled"``,
  ``ffprobe=None``: probing then parses ``ffmpeg -i`` output, see ``swap_engine.video``). imageio-ffmpeg honours
  ``IMAGEIO_FFMPEG_EXE`` if an admin wants to point at a specific build.
- Neither found: ``FFmpegNotFound`` whose hint says how to get one.
- ``FFmpegTools.version`` and ``FFmpegTools.has_encoder(name)`` run the binary once each (cached per path).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

from famswap.errors import FFmpegNotFound

_VERSION_RE = re.compile(r"^ffmpeg version (\S+)")
_ENCODER_RE = re.compile(r"^\s*[VAS][A-Z.]{5}\s+(\S+)")


@dataclass(frozen=True)
class FFmpegTools:
    """The executables to run. ``ffprobe`` is None with the bundled binary (imageio-ffmpeg ships no ffprobe)."""

    ffmpeg: str
    ffprobe: str | None
    source: Literal["system", "bundled"]

    @property
    def version(self) -> str:
        """The version token of ``ffmpeg -version`` (e.g. ``7.1`` or ``n9.0.2-17-g2a571b6068-20260930``)."""
        return _version(self.ffmpeg)

    def has_encoder(self, name: str) -> bool:
        """Whether this ffmpeg was built with the encoder ``name`` (e.g. ``libx264``, ``aac``, ``libwebp_anim``)."""
        return name in _encoders(self.ffmpeg)


def find_ffmpeg(path_env: str | None = None) -> FFmpegTools:
    """Resolve ffmpeg: system binaries on ``path_env`` (default: ``$PATH``) first, else imageio-ffmpeg's bundled one.

    Raises FFmpegNotFound when neither exists.
    """
    return _find(os.environ.get("PATH", os.defpath) if path_env is None else path_env)


@functools.cache
def _find(path_env: str) -> FFmpegTools:
    system = shutil.which("ffmpeg", path=path_env)
    if system:
        return FFmpegTools(ffmpeg=system, ffprobe=shutil.which("ffprobe", path=path_env), source="system")
    try:
        import imageio_ffmpeg

        bundled = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise FFmpegNotFound(
            f"ffmpeg was not found on the PATH and the bundled copy is unavailable ({exc}).",
            hint="Install ffmpeg (e.g. `apt install ffmpeg`) or reinstall famswap so imageio-ffmpeg brings its binary.",
        ) from None
    if not os.access(bundled, os.X_OK):
        raise FFmpegNotFound(
            f"The bundled ffmpeg at {bundled} is not executable.",
            hint="Install ffmpeg on the PATH (e.g. `apt install ffmpeg`) or fix the file's permissions.",
        )
    return FFmpegTools(ffmpeg=bundled, ffprobe=None, source="bundled")


def _run_text(ffmpeg: str, *args: str) -> str:
    try:
        done = subprocess.run(
            [ffmpeg, "-hide_banner", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise FFmpegNotFound(
            f"{ffmpeg} could not be run ({exc}).", hint="Check the file, or install ffmpeg on the PATH."
        ) from None
    return done.stdout


@functools.cache
def _version(ffmpeg: str) -> str:
    # With -hide_banner, -version still prints its first line: "ffmpeg version <token> Copyright ...".
    for line in _run_text(ffmpeg, "-version").splitlines():
        match = _VERSION_RE.match(line)
        if match:
            return match.group(1)
    return "unknown"


@functools.cache
def _encoders(ffmpeg: str) -> frozenset[str]:
    # Lines look like " V....D libx264              libx264 H.264 / AVC ..."; the legend above uses "V..... = Video".
    names = set()
    for line in _run_text(ffmpeg, "-encoders").splitlines():
        match = _ENCODER_RE.match(line)
        if match and match.group(1) != "=":
            names.add(match.group(1))
    return frozenset(names)
