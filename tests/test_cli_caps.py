"""The command line refuses clips over the caps in seconds, with one clear line: a 1000 fps clip, a 4096x4096 video."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.media_kit import make_clip


@pytest.fixture
def env(tmp_path: Path, model_dir: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("FAMSWAP_", "DISCORD_"))}
    return {**keep, "FAMSWAP_HOME": str(home), "FAMSWAP_MODEL_DIR": str(model_dir),
            "FAMSWAP_KEY_FILE": str(tmp_path / "key"), "FAMSWAP_ENV_FILE": str(tmp_path / "no.env")}  # fmt: skip


def famswap(args: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "famswap.cli", *args], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=300)  # fmt: skip
    return run, time.monotonic() - started


def famswap_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("famswap:")]


def test_swap_refuses_a_1000_fps_clip(env: dict[str, str], tmp_path: Path, photos: Path) -> None:
    clip = make_clip(tmp_path / "fast.mp4", fps=1000, frames=12)
    out = tmp_path / "out.mp4"
    run, took = famswap(["swap", str(clip), "--identity-from", str(photos / "obama.jpg"), "--out", str(out)],
                        env, tmp_path)  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    [line] = famswap_lines(run.stderr)
    assert "fast.mp4 runs at 1000 frames per second; the limit is 120" in line
    assert not out.exists()
    print(f"famswap swap of a 1000 fps clip refused in {took:.1f} s")  # the process start included


def test_enroll_refuses_a_4096_square_video(env: dict[str, str], tmp_path: Path) -> None:
    big = make_clip(tmp_path / "big.mp4", size=(4096, 4096), fps=10, frames=3)
    run, took = famswap(["enroll", "Grandpa", str(big)], env, tmp_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "big.mp4 is 4096x4096, more than the 2,073,600 pixels allowed" in run.stdout
    assert "Traceback" not in run.stdout
    print(f"famswap enroll of a 4096x4096 video refused in {took:.1f} s")
