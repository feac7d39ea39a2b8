"""`famswap swap` and `famswap tracks` as a user runs them: a real process on tiny clips cut from the shared media."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.config import Settings
from storage import JobStatus, SwapJob, open_storage
from swap_engine import video

FRAMES = 20


def _cut(src: Path, dst: Path, frames: int, size: tuple[int, int] | None) -> Path:
    info = video.probe(src)
    w, h = size or info.size
    with video.VideoWriter(dst, w, h, info.fps, audio_from=src if info.has_audio else None) as writer:
        for frame in video.read_frames(src, max_frames=frames, size=size):
            writer.write(frame)
    return dst


def _side_by_side(left: Path, right: Path, dst: Path, frames: int) -> Path:
    """A two-person clip: ``left`` and ``right`` at 160 px side by side, ``frames`` frames, no sound."""
    fps = video.probe(left).fps
    with video.VideoWriter(dst, 320, 160, fps) as writer:
        pairs = zip(video.read_frames(left, max_frames=frames, size=(160, 160)),
                    video.read_frames(right, max_frames=frames, size=(160, 160)), strict=True)  # fmt: skip
        for a, b in pairs:
            writer.write(np.concatenate([a, b], axis=1))
    return dst


@pytest.fixture(scope="module")
def media(clips: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli-media")
    return {
        "clip": _cut(clips / "selfie_woman_short.mp4", folder / "clip.mp4", FRAMES, (160, 160)),
        "person": _cut(clips / "selfie_man.mp4", folder / "person.mp4", FRAMES, (160, 160)),
        "stage": _cut(clips / "stage_multi_face.mp4", folder / "stage.mp4", 24, None),
        "two": _side_by_side(clips / "selfie_man.mp4", clips / "selfie_woman_short.mp4", folder / "two.mp4", 12),
    }


@pytest.fixture
def env(tmp_path: Path, model_dir: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("FAMSWAP_", "DISCORD_"))}
    return {**keep, "FAMSWAP_HOME": str(home), "FAMSWAP_MODEL_DIR": str(model_dir),
            "FAMSWAP_KEY_FILE": str(tmp_path / "key")}  # fmt: skip


def famswap(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "famswap.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def famswap_lines(stderr: str) -> list[str]:
    """famswap's own error lines (MediaPipe's C++ logging and the progress bars share stderr)."""
    return [line for line in stderr.splitlines() if line.startswith("famswap:")]


def test_swap_start_to_finish(media: dict[str, Path], env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "result" / "OUT.mp4"
    run = famswap(
        ["swap", str(media["clip"]), "--identity-from", str(media["person"]), "--train-minutes", "0.05",
         "--out", str(out), "--device", "cpu"],
        env, tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    for stage in ("enroll", "scan", "actor", "train", "convert", "done"):
        assert any(line.startswith(stage) for line in run.stderr.replace("\r", "\n").splitlines()), stage
    report = json.loads(out.with_name("OUT.json").read_text())
    assert report["frames"] == FRAMES and report["has_audio"] and report["swapped"] > FRAMES // 2
    assert "person_detail" in report["timings"]  # the person's own detail from their face set, by default
    info = video.probe(out, count_frames=True)
    assert info.frame_count == FRAMES and info.has_audio and info.size == (160, 160)
    assert info.tags.get("synthetic") == "true"
    gif = out.with_name("OUT.compare.gif")
    assert gif.is_file() and gif.read_bytes()[:3] == b"GIF"
    assert report["comparison"] == str(gif)


def test_the_command_line_and_the_worker_report_the_same_fields(
    media: dict[str, Path], env: dict[str, str], tmp_path: Path
) -> None:
    """`famswap swap` and a swap job queued as the bot queues it, run by `famswap worker --once`, on the same clip
    and person: the same report fields, the same labelled GIF and video metadata."""
    out = tmp_path / "cli.mp4"
    run = famswap(
        ["swap", str(media["clip"]), "--identity-from", str(media["person"]), "--train-steps", "2",
         "--out", str(out), "--device", "cpu", "--model", "lite"],
        env, tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    cli = json.loads(out.with_name("cli.json").read_text())
    settings = Settings.load(env, env_file=tmp_path / "no.env")

    async def queue() -> int:
        async with open_storage(settings) as store:
            (person,) = await store.list_identities(0, 0)  # the CLI enrolled the person as from-<hash>
            job = await store.enqueue(
                0, 0, SwapJob(identity_id=person.id, identity_name=person.display_name, clip_name="clip.mp4",
                              max_bytes=10 << 20, train_steps=2, title="as the bot queues it"),
                identity_ids=[person.id], input=media["clip"],
            )  # fmt: skip
            return job.id

    async def result(job_id: int) -> tuple[dict[str, object], bytes, Path]:
        async with open_storage(settings) as store:
            job = await store.get_job(job_id)
            assert job.status is JobStatus.SUCCEEDED, job.error
            done = await store.get_result(0, job_id, 0)
            assert done.comparison is not None and done.video is not None
            gif = await store.read_blob(done.comparison)
            return done.report, gif, await store.decrypt_to(done.video, tmp_path / "worker.mp4")

    job_id = asyncio.run(queue())
    worker = famswap(["worker", "--once", "--device", "cpu"], env, tmp_path)
    assert worker.returncode == 0, worker.stderr[-3000:]
    report, gif, worker_video = asyncio.run(result(job_id))
    assert set(report) == set(cli)
    for field in ("kind", "frames", "swapped", "track", "tracks", "model", "identity", "has_audio"):
        assert report[field] == cli[field], field
    # Both before/after GIFs say they are synthetic, both videos carry the metadata.
    assert b"AI face swap" in gif and b"AI face swap" in out.with_name("cli.compare.gif").read_bytes()
    for path in (out, worker_video):
        assert video.probe(path).tags.get("synthetic") == "true"


def test_swap_refuses_a_text_file_as_the_clip(media: dict[str, Path], env: dict[str, str], tmp_path: Path) -> None:
    clip = tmp_path / "notes.mp4"
    clip.write_text("this is not a video\n" * 50)
    out = tmp_path / "OUT.mp4"
    run = famswap(["swap", str(clip), "--identity-from", str(media["person"]), "--out", str(out)], env, tmp_path)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    lines = famswap_lines(run.stderr)
    assert len(lines) == 1 and "notes.mp4" in lines[0], run.stderr
    assert not out.exists()


def test_swap_refuses_a_person_without_a_face(
    media: dict[str, Path], env: dict[str, str], photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "OUT.mp4"
    run = famswap(
        ["swap", str(media["clip"]), "--identity-from", str(photos / "dog_no_human_face.jpg"), "--out", str(out)],
        env, tmp_path,
    )  # fmt: skip
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    lines = famswap_lines(run.stderr)
    assert len(lines) == 1 and "face" in lines[0].lower(), run.stderr
    assert not out.exists() and not list(tmp_path.glob("OUT*"))


def test_tracks_lists_people_and_writes_a_contact_sheet(
    media: dict[str, Path], env: dict[str, str], tmp_path: Path
) -> None:
    sheet = tmp_path / "sheet.jpg"
    run = famswap(["tracks", str(media["stage"]), "--out", str(sheet)], env, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    people = [line for line in run.stdout.splitlines() if line.startswith("face ")]
    assert len(people) == 2 and people[0].startswith("face 1:") and "main person" in people[0], run.stdout
    assert sheet.is_file() and sheet.read_bytes()[:2] == b"\xff\xd8"


def test_two_people_onto_a_two_person_clip(
    media: dict[str, Path], env: dict[str, str], photos: Path, tmp_path: Path
) -> None:
    """Each --face belongs to the person named just before it; both faces of the clip are swapped in one job."""
    out = tmp_path / "two-swapped.mp4"
    run = famswap(
        ["swap", str(media["two"]), "--identity-from", str(photos / "obama.jpg"), "--face", "2",
         "--identity-from", str(photos / "biden.jpg"), "--face", "1", "--train-steps", "2", "--out", str(out),
         "--device", "cpu", "--model", "lite"],
        env, tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.with_name("two-swapped.json").read_text())
    assert report["faces"] == 2 and report["frames"] == 12
    [first, second] = report["people"]
    assert (first["face"], second["face"]) == (2, 1) and first["identity"] != second["identity"]
    assert first["swapped"] >= 10 and second["swapped"] >= 10 and report["swapped"] >= 10
    assert sum(line.startswith("person") for line in run.stderr.splitlines()) == 2
    # Both halves of the picture changed in the middle (the face), far more than along their top edge (H.264 alone).
    source = list(video.read_frames(media["two"]))
    result = list(video.read_frames(out))
    for x in (0, 160):
        diff = np.abs(result[6][:, x : x + 160].astype(np.int16) - source[6][:, x : x + 160].astype(np.int16))
        face, edge = diff[50:110, 50:110].mean(), diff[:12].mean()
        assert face > 3 * edge, f"the face at x = {x}..{x + 160} was not swapped: {face:.2f} vs {edge:.2f}"


def test_swap_refuses_a_face_before_its_person(env: dict[str, str], tmp_path: Path) -> None:
    run = famswap(["swap", "clip.mp4", "--face", "1", "--identity", "me", "--out", "o.mp4"], env, tmp_path)
    assert run.returncode == 2 and "--face 1 must follow the --identity" in run.stderr
    run = famswap(["swap", "clip.mp4", "--identity", "a", "--identity", "b", "--track", "0", "--out", "o.mp4"],
                  env, tmp_path)  # fmt: skip
    assert run.returncode == 2 and "--track is for one person" in run.stderr
