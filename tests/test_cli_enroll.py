"""`famswap enroll` keeps one person: a selfie video with a photo of someone else keeps the video's faces and rejects
the photo with a reason; a later photo of someone else is refused until `--add-anyway`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli_caps import env, famswap  # noqa: F401 - env is a fixture
from tests.worker.workerkit import cut_clip

pytestmark = pytest.mark.timeout(600)


def test_enroll_keeps_the_video_and_rejects_the_photo_of_someone_else(
    env: dict[str, str], tmp_path: Path, clips: Path, photos: Path  # noqa: F811
) -> None:
    # The first 3 s of the real selfie clip (same name, so the lines read as for the whole file), and the real photo.
    (tmp_path / "in").mkdir()
    selfie = cut_clip(clips / "selfie_man.mp4", tmp_path / "in" / "selfie_man.mp4", 75, 360)
    run, _ = famswap(["enroll", "me", str(selfie), str(photos / "obama.jpg")], env, tmp_path)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("selfie_man.mp4: ") and line.endswith("kept") for line in lines), lines
    assert "obama.jpg: rejected — obama.jpg shows someone else — not the person in selfie_man.mp4." in lines
    assert "1 someone else" in lines[-1]
    faces = int(next(line for line in lines if line.startswith("selfie_man.mp4: ")).split()[1])

    # Later, a photo of someone else for "me": refused, nothing added, and the flag that adds it is named.
    run, _ = famswap(["enroll", "me", str(photos / "biden.jpg")], env, tmp_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stdout + run.stderr
    assert "biden.jpg does not look like me as enrolled before" in run.stdout
    assert "famswap enroll --add-anyway me" in run.stdout
    listed, _ = famswap(["identities"], env, tmp_path)
    assert f"me: {faces} faces, ready" in listed.stdout

    run, _ = famswap(["enroll", "--add-anyway", "me", str(photos / "biden.jpg")], env, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "biden.jpg: 1 face kept" in run.stdout.splitlines()
    listed, _ = famswap(["identities"], env, tmp_path)
    assert f"me: {faces + 1} faces, ready" in listed.stdout
