"""find_ffmpeg: system binaries on the PATH win, the bundled imageio-ffmpeg binary is the fallback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from famswap.errors import FFmpegNotFound
from swap_engine.ffmpeg_bin import find_ffmpeg


def _fake_tool(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text(f'#!/bin/sh\necho "{name} version 6.1-fake Copyright (c) the test"\n')
    path.chmod(0o755)
    return path


def test_system_ffmpeg_and_ffprobe_on_path_win(tmp_path: Path) -> None:
    ffmpeg = _fake_tool(tmp_path, "ffmpeg")
    ffprobe = _fake_tool(tmp_path, "ffprobe")

    tools = find_ffmpeg(str(tmp_path))

    assert tools.source == "system"
    assert tools.ffmpeg == str(ffmpeg)
    assert tools.ffprobe == str(ffprobe)
    assert tools.version == "6.1-fake"
    assert find_ffmpeg(str(tmp_path)) is tools  # cached per PATH string


def test_system_ffmpeg_without_ffprobe(tmp_path: Path) -> None:
    _fake_tool(tmp_path, "ffmpeg")

    tools = find_ffmpeg(str(tmp_path))

    assert tools.source == "system"
    assert tools.ffprobe is None


def test_non_executable_file_on_path_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "ffmpeg").write_text("not a program")

    assert find_ffmpeg(str(tmp_path)).source == "bundled"


def test_empty_path_falls_back_to_the_bundled_binary_which_runs(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()

    tools = find_ffmpeg(str(empty))

    assert tools.source == "bundled"
    assert tools.ffprobe is None
    done = subprocess.run([tools.ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert done.stdout.startswith("ffmpeg version")
    assert tools.version != "unknown"
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
