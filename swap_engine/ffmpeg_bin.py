"""Find the ffmpeg (and ffprobe) executables famswap runs: the system's first, else imageio-ffmpeg's bundled one.

Contract:
- ``find_ffmpeg(path_env=None) -> FFmpegTools``. ``path_env`` is a PATH-style string searched instead of the
  process's ``PATH`` (tests pass their own; the result is cached per distinct string for the process's life).
- A system ``ffmpeg`` found on the PATH wins (``source="system"``), with the ``ffprobe`` beside it on the PATH when
  there is one, if it is usable: version ``MIN_VERSION`` (4.4, Ubuntu 22.04's) or newer, with the libx264 encoder,
  and it runs. Otherwise the binary shipped in the ``imageio-ffmpeg`` wheel is used (``source="bundled"``,
  ``ffprobe=None``: probing then parses ``ffmpeg -i`` output, see ``swap_engine.video``); a refused system binary is
  logged once as one warning line and named in ``FFmpegTools.skipped``. imageio-ffmpeg honours
  ``IMAGEIO_FFMPEG_EXE`` if an admin wants to point at a specific build.
- Neither found: ``FFmpegNotFound`` whose hint says how to get one.
- ``FFmpegTools.version`` / ``.release`` and ``FFmpegTools.has_encoder(name)`` run the binary once each (cached per
  path). Command builders in ``swap_engine.video`` take ``release`` to pick options that this version knows.
- ``system_ffmpeg(path_env)`` and ``bundled_ffmpeg()`` give one source each, without the choice (tests run both).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

from common.errors import FFmpegNotFound

_VERSION_RE = re.compile(r"^ffmpeg version (\S+)")
_RELEASE_RE = re.compile(r"^n?(\d+)\.(\d+)")
_ENCODER_RE = re.compile(r"^\s*[VAS][A-Z.]{5}\s+(\S+)")

Release = tuple[int, int]
MIN_VERSION: Release = (4, 4)  # Ubuntu 22.04 (and the CUDA images built on it) ship 4.4
# A build from FFmpeg's git (``N-112345-g…``, ``2024-03-05-git-…``) is newer than every release.
SNAPSHOT: Release = (1000, 0)
REQUIRED_ENCODERS = ("libx264",)  # every MP4 famswap writes is H.264; AAC is built into ffmpeg itself

log = logging.getLogger(__name__)


def parse_release(version: str) -> Release:
    """``(major, minor)`` of a ``ffmpeg -version`` token: ``5.1.9-0+deb12u1`` → (5, 1), ``n9.0.2-17-g…`` → (9, 0),
    ``4.4.2-0ubuntu0.22.04.1`` → (4, 4); anything else (a git snapshot, a date) → ``SNAPSHOT``."""
    match = _RELEASE_RE.match(version)
    return (int(match.group(1)), int(match.group(2))) if match else SNAPSHOT


def release_text(release: Release) -> str:
    return "a development build" if release == SNAPSHOT else f"{release[0]}.{release[1]}"


@dataclass(frozen=True)
class FFmpegTools:
    """The executables to run. ``ffprobe`` is None with the bundled binary (imageio-ffmpeg ships no ffprobe)."""

    ffmpeg: str
    ffprobe: str | None
    source: Literal["system", "bundled"]
    skipped: str | None = None  # why a system ffmpeg on the PATH was not used, in words for the user

    @property
    def version(self) -> str:
        """The version token of ``ffmpeg -version`` (e.g. ``7.1`` or ``n9.0.2-17-g2a571b6068-20260930``)."""
        return _version(self.ffmpeg)

    @property
    def release(self) -> Release:
        """``(major, minor)`` of this ffmpeg, what the command builders branch on (see ``parse_release``)."""
        return parse_release(self.version)

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
    system = system_ffmpeg(path_env)
    if system is None:
        return bundled_ffmpeg()
    problem = unusable_because(system)
    if problem is None:
        return system
    try:
        bundled = bundled_ffmpeg()
    except FFmpegNotFound as exc:
        raise FFmpegNotFound(
            f"{problem}, and the bundled copy is unavailable ({exc.message}).",
            hint=f"Install ffmpeg {release_text(MIN_VERSION)} or newer with libx264, or reinstall famswap so "
            "imageio-ffmpeg brings its binary.",
        ) from None
    log.warning("%s; using the bundled ffmpeg %s instead.", problem, bundled.version)
    return FFmpegTools(bundled.ffmpeg, bundled.ffprobe, bundled.source, skipped=problem)


def system_ffmpeg(path_env: str | None = None) -> FFmpegTools | None:
    """The ``ffmpeg`` (and ``ffprobe``) on ``path_env`` (default: ``$PATH``), usable or not; None when there is none."""
    path_env = os.environ.get("PATH", os.defpath) if path_env is None else path_env
    found = shutil.which("ffmpeg", path=path_env)
    if not found:
        return None
    return FFmpegTools(ffmpeg=found, ffprobe=shutil.which("ffprobe", path=path_env), source="system")


def bundled_ffmpeg() -> FFmpegTools:
    """imageio-ffmpeg's binary (a recent static build, without ffprobe). FFmpegNotFound when it is missing."""
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


def unusable_because(tools: FFmpegTools) -> str | None:
    """Why famswap cannot use this ffmpeg (one line naming it and what it needs), or None when it can."""
    try:
        release = tools.release
        missing = [name for name in REQUIRED_ENCODERS if not tools.has_encoder(name)]
    except FFmpegNotFound as exc:
        return f"The ffmpeg at {tools.ffmpeg} does not run ({exc.message})"
    if release < MIN_VERSION:
        return (
            f"The ffmpeg at {tools.ffmpeg} is version {tools.version}, older than the "
            f"{release_text(MIN_VERSION)} famswap needs"
        )
    if missing:
        return f"The ffmpeg at {tools.ffmpeg} was built without the {', '.join(missing)} encoder famswap needs"
    return None


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
