"""find_ffmpeg: a usable system ffmpeg on the PATH wins, the bundled imageio-ffmpeg binary is the fallback."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from common.errors import FFmpegNotFound
from swap_engine.ffmpeg_bin import (
    MIN_VERSION,
    SNAPSHOT,
    bundled_ffmpeg,
    find_ffmpeg,
    parse_release,
    system_ffmpeg,
    unusable_because,
)
from tests.ffmpeg_fakes import fake_tool as _fake_tool


@pytest.mark.parametrize(
    ("token", "release"),
    [("5.1.9-0+deb12u1", (5, 1)), ("4.4.2-0ubuntu0.22.04.1", (4, 4)), ("n9.0.2-17-g2a571b6068-20260930", (9, 0)),
     ("6.1.1-3ubuntu5", (6, 1)), ("7.1", (7, 1)), ("4.2.7-0ubuntu0.1", (4, 2)), ("3.4.11", (3, 4)),
     ("N-112345-gabcdef0123", SNAPSHOT), ("2024-03-05-git-1234abcd-full_build-www.gyan.dev", SNAPSHOT)],
)
def test_parse_release(token: str, release: tuple[int, int]) -> None:
    assert parse_release(token) == release


def test_system_ffmpeg_and_ffprobe_on_path_win(tmp_path: Path) -> None:
    ffmpeg = _fake_tool(tmp_path, "ffmpeg")
    ffprobe = _fake_tool(tmp_path, "ffprobe")

    tools = find_ffmpeg(str(tmp_path))

    assert tools.source == "system" and tools.skipped is None
    assert tools.ffmpeg == str(ffmpeg)
    assert tools.ffprobe == str(ffprobe)
    assert tools.version == "6.1-fake" and tools.release == (6, 1)
    assert tools.has_encoder("libx264") and not tools.has_encoder("libwebp_anim")
    assert find_ffmpeg(str(tmp_path)) is tools  # cached per PATH string


def test_system_ffmpeg_without_ffprobe(tmp_path: Path) -> None:
    _fake_tool(tmp_path, "ffmpeg", version="4.4.2-0ubuntu0.22.04.1")

    tools = find_ffmpeg(str(tmp_path))

    assert tools.source == "system" and tools.release == MIN_VERSION
    assert tools.ffprobe is None


@pytest.mark.parametrize(
    ("version", "encoders", "words"),
    [("4.2.7-0ubuntu0.1", "libx264 aac", "is version 4.2.7-0ubuntu0.1, older than the 4.4 famswap needs"),
     ("3.4.11", "libx264", "older than the 4.4"),
     ("5.1.9-0+deb12u1", "aac mpeg4", "was built without the libx264 encoder famswap needs")],
)
def test_an_unusable_system_ffmpeg_is_refused_in_one_line_for_the_bundled_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, version: str, encoders: str, words: str
) -> None:
    folder = tmp_path / version.replace("+", "_")
    old = _fake_tool(folder, "ffmpeg", version=version, encoders=encoders)
    _fake_tool(folder, "ffprobe", version=version)

    with caplog.at_level(logging.WARNING, logger="swap_engine.ffmpeg_bin"):
        tools = find_ffmpeg(str(folder))

    assert tools.source == "bundled" and tools.ffprobe is None
    assert tools.skipped is not None and words in tools.skipped and str(old) in tools.skipped
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and words in warnings[0] and "using the bundled ffmpeg" in warnings[0]
    assert unusable_because(system_ffmpeg(str(folder))) == tools.skipped  # type: ignore[arg-type]


def test_a_system_ffmpeg_that_does_not_run_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "ffmpeg"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)

    tools = find_ffmpeg(str(tmp_path))

    assert tools.source == "bundled"
    assert tools.skipped is not None and "does not run" in tools.skipped


def test_non_executable_file_on_path_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "ffmpeg").write_text("not a program")

    tools = find_ffmpeg(str(tmp_path))

    assert tools.source == "bundled" and tools.skipped is None


def test_empty_path_falls_back_to_the_bundled_binary_which_runs(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()

    tools = find_ffmpeg(str(empty))

    assert tools.source == "bundled"
    assert tools.ffprobe is None
    assert system_ffmpeg(str(empty)) is None
    done = subprocess.run([tools.ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert done.stdout.startswith("ffmpeg version")
    assert tools.version != "unknown" and MIN_VERSION <= tools.release < SNAPSHOT
    assert unusable_because(bundled_ffmpeg()) is None
    # VideoWriter and fit_to_size rely on these encoders.
    assert tools.has_encoder("libx264")
    assert tools.has_encoder("aac")
    assert not tools.has_encoder("no_such_encoder")


def test_nothing_found_raises_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import imageio_ffmpeg

    def missing() -> str:
        raise RuntimeError("No ffmpeg exe could be found")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    nowhere = tmp_path / "nothing-here"
    nowhere.mkdir()

    with pytest.raises(FFmpegNotFound) as caught:
        find_ffmpeg(str(nowhere))

    assert "ffmpeg" in caught.value.message
    assert caught.value.hint and "install" in caught.value.hint.lower()
    old = _fake_tool(tmp_path / "old", "ffmpeg", version="4.2.7")
    with pytest.raises(FFmpegNotFound) as too_old:
        find_ffmpeg(str(old.parent))
    assert "older than the 4.4" in too_old.value.message and "bundled copy is unavailable" in too_old.value.message
    assert too_old.value.hint and "4.4 or newer" in too_old.value.hint
