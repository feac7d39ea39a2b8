"""The famswap command line as a user meets it: help, doctor, and a clear exit without a token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from swap_engine.ffmpeg_bin import bundled_ffmpeg
from tests.ffmpeg_fakes import fake_tool


def _famswap(args: list[str], env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAMSWAP_", "DISCORD_"))}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "famswap.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


@pytest.fixture
def env(home: Path, model_dir: Path) -> dict[str, str]:
    return {"FAMSWAP_HOME": str(home), "FAMSWAP_MODEL_DIR": str(model_dir), "FAMSWAP_KEY_FILE": str(home.parent / "k")}


def test_help_lists_the_commands(env: dict[str, str], tmp_path: Path) -> None:
    out = _famswap(["--help"], env, tmp_path)
    assert out.returncode == 0
    for command in ("run", "worker", "enroll", "swap", "train", "identities", "forget", "doctor"):
        assert command in out.stdout


def test_run_without_token_exits_2_with_one_line(env: dict[str, str], tmp_path: Path) -> None:
    out = _famswap(["run"], env, tmp_path)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "DISCORD_TOKEN" in lines[0]
    assert "Traceback" not in out.stderr


def test_bad_setting_exits_2_naming_it(env: dict[str, str], tmp_path: Path) -> None:
    out = _famswap(["doctor"], {**env, "FAMSWAP_DEVICE": "tpu"}, tmp_path)
    assert out.returncode == 2
    assert "FAMSWAP_DEVICE" in out.stderr and "Traceback" not in out.stderr


def test_doctor_reports_what_it_found(env: dict[str, str], tmp_path: Path) -> None:
    out = _famswap(["doctor"], env, tmp_path)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "python" in text and "torch" in text and "ffmpeg" in text
    assert "checksum ok" in text
    assert "no DISCORD_TOKEN" in text


def test_a_relative_model_dir_is_the_same_folder_for_every_process(home: Path, model_dir: Path, tmp_path: Path) -> None:
    # As a user writes it in .env: relative to the folder famswap is started in. A worker child of `famswap run`
    # inherits the exported absolute path, so it finds the model whatever its own working folder.
    start = tmp_path / "start"
    start.mkdir()
    relative = os.path.relpath(model_dir, start)
    (start / ".env").write_text(f"FAMSWAP_MODEL_DIR={relative}\n")
    env = {"FAMSWAP_HOME": str(home), "FAMSWAP_KEY_FILE": str(home.parent / "k")}

    out = _famswap(["doctor"], env, start)

    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{model_dir / 'face_landmarker.task'} checksum ok" in out.stdout
    # What `famswap run` hands its workers: the environment after start-up, absolute.
    script = "import os; from famswap import cli; cli.main(['doctor']); print(os.environ['FAMSWAP_MODEL_DIR'])"
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=start, timeout=120,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("FAMSWAP_")}, **env},
    )
    assert child.stdout.strip().splitlines()[-1] == str(model_dir), child.stdout + child.stderr


def test_doctor_says_which_ffmpeg_it_uses_and_why_it_refused_an_old_one(env: dict[str, str], tmp_path: Path) -> None:
    old_bin = tmp_path / "old-bin"
    fake_tool(old_bin, "ffmpeg", version="4.2.7-0ubuntu0.1")  # Ubuntu 20.04's
    path = f"{old_bin}{os.pathsep}{os.environ.get('PATH', '')}"

    out = _famswap(["doctor"], {**env, "PATH": path}, tmp_path)

    assert out.returncode == 0, out.stdout + out.stderr
    (line,) = [line for line in out.stdout.splitlines() if " ffmpeg " in f" {line} "]
    assert line.startswith("ok ") and "bundled: " in line and "usable (famswap needs 4.4 or newer" in line
    assert f"Not used: The ffmpeg at {old_bin / 'ffmpeg'} is version 4.2.7-0ubuntu0.1, older than the 4.4" in line
    assert f"version {bundled_ffmpeg().version} " in line
    assert len([w for w in out.stderr.splitlines() if "older than the 4.4" in w]) == 1, "one warning line"


def test_train_warms_the_local_bank_and_identities_shows_it(env: dict[str, str], photos: Path, tmp_path: Path) -> None:
    off = _famswap(["train"], {**env, "FAMSWAP_WARM_MINUTES_PER_DAY": "0"}, tmp_path)
    assert off.returncode == 2 and "FAMSWAP_WARM_MINUTES_PER_DAY" in off.stderr and "--minutes" in off.stderr
    nobody = _famswap(["train", "--steps", "2"], env, tmp_path)
    assert nobody.returncode == 0 and "nobody is enrolled" in nobody.stdout, nobody.stdout + nobody.stderr
    enrolled = _famswap(["enroll", "Anna", str(photos / "obama.jpg")], env, tmp_path)
    assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
    before = _famswap(["identities"], env, tmp_path)
    assert "Anna: 1 faces, ready; not trained yet" in before.stdout, before.stdout + before.stderr
    trained = _famswap(["train", "--steps", "2"], {**env, "FAMSWAP_MODEL": "lite", "FAMSWAP_DEVICE": "cpu"}, tmp_path)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "warmed the face bank 2 steps" in trained.stdout and "all steps done" in trained.stdout
    assert "Anna: 1 faces, ready; cold: trained 2 steps" in trained.stdout  # the identities listing follows
