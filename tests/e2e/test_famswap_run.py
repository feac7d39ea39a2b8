"""The real `famswap run` (the bot in its process, a CPU worker as its child) against the fake Discord.

Nothing is stood in for: the test starts ``python -m famswap.cli run`` as a user would, with the fake's REST and
gateway URLs as configuration, and drives it only through Discord — slash commands with real photos and a real
clip, then reading the messages the bot posts and edits. Then it stops ``famswap run`` twice in the middle of a
swap — SIGTERM, then SIGKILL of the supervisor alone — and checks that no worker outlives it, that the job resumes
from its checkpoint and that its result is posted, once. A run that cannot log in says why in one line.

When to stop the run is decided from the job's states as storage records them (the test opens the same SQLite file
through the storage API), never from which status message the bot happened to send: the bot spaces its edits
~12 s apart, and a resumed job can finish within that.

Not covered here: SIGKILL of the whole process group. Nothing then hands the job back, so another worker may only
take it over once its lease runs out (a minute) — longer than this suite's budget for one file.

The training budget is tiny (FAMSWAP_TRAIN_MINUTES_CPU): a preview swap trains for it, a "best" swap three times as
long, which must outlast the bot's spacing of status edits (12 s) so that a user sees "Learning the face".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from common.config import Settings
from storage.api import Storage, open_storage
from storage.records import Job, JobStatus, Result
from swap_engine.ffmpeg_bin import find_ffmpeg
from tests.bot.fake_discord import FakeChannel, FakeDiscord, FakeGuild, FakeInteraction, FakeMessage, FakeUser

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
TRAIN_MINUTES = 0.13  # preview: ~8 s of training; best (3x): ~23 s, well over the ~14 s between two edits of a status
START_TIMEOUT = 90.0  # interpreter, discord.py, storage; the worker imports torch beside it
JOB_TIMEOUT = 150.0  # one swap of a 1 s clip on a slow, shared CPU: scan, train, convert, post
STOP_TIMEOUT = 60.0  # SIGTERM: the bot closes, the worker checkpoints and hands its job back
POLL_S = 0.2

T = TypeVar("T")


@dataclass
class Family:
    guild: FakeGuild
    general: FakeChannel
    alice: FakeUser


class FamswapRun:
    """One `famswap run` process, in a session of its own so that its workers can be killed with it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.log_start = log.stat().st_size if log.exists() else 0  # this run's output starts here
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "famswap.cli", "run"],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def output(self) -> str:
        with self.log.open("rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")

    def group_alive(self) -> bool:
        """Whether any process of the group (the supervisor or a worker it started) is still running.

        Zombies do not count: a worker orphaned by a killed supervisor is reaped by whatever init this machine has.
        """
        proc = Path("/proc")
        if not proc.is_dir():  # pragma: no cover - not Linux: any member, zombie or not
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return False
            return True
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()  # after "pid (comm)": state ppid pgrp …
            except OSError:
                continue  # it ended meanwhile
            if fields and fields[0] != "Z" and int(fields[2]) == self.proc.pid:
                return True
        return False

    def kill_group(self) -> None:
        """The last resort: SIGKILL every process of the group and reap the supervisor."""
        if self.group_alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass


class Scene:
    """The fake Discord, the family in it and the `famswap run` process(es) serving it."""

    def __init__(self, fake: FakeDiscord, family: Family, env: dict[str, str], log: Path) -> None:
        self.fake, self.family, self.env, self.log = fake, family, env, log
        self.run: FamswapRun | None = None
        self._storage = contextlib.AsyncExitStack()
        self._store: Storage | None = None

    def log_tail(self, chars: int = 6000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-chars:]

    def _explain(self, what: str) -> str:
        recent = "\n".join(f"  {r.method} {r.path} → {r.status}" for r in self.fake.requests[-12:])
        return f"{what}\nlast Discord requests:\n{recent}\n--- famswap run output (tail) ---\n{self.log_tail()}"

    async def until(self, predicate: Callable[[], T], *, timeout: float, what: str) -> T:
        """Poll ``predicate`` until it is truthy; fail at once if `famswap run` died, or after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.run is not None and self.run.returncode is not None:
                pytest.fail(self._explain(f"famswap run exited ({self.run.returncode}) while waiting for {what}"))
            if time.monotonic() > deadline:
                pytest.fail(self._explain(f"timed out after {timeout:.0f} s waiting for {what}"))
            await asyncio.sleep(POLL_S)

    async def job(self, job_id: int) -> Job:
        """The job as storage records it: the same database and key as `famswap run` (opened once it made them)."""
        if self._store is None:
            settings = Settings.load(self.env, env_file=Path(self.env["FAMSWAP_ENV_FILE"]))
            self._store = await self._storage.enter_async_context(open_storage(settings, maintenance=False))
        return await self._store.get_job(job_id)

    async def job_until(self, job_id: int, predicate: Callable[[Job], bool], *, timeout: float, what: str) -> Job:
        """Poll the job's row until ``predicate`` holds; fail like ``until``."""
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if predicate(job):
                return job
            if self.run is not None and self.run.returncode is not None:
                pytest.fail(self._explain(f"famswap run exited ({self.run.returncode}) while waiting for {what}"))
            if time.monotonic() > deadline:
                pytest.fail(self._explain(f"timed out after {timeout:.0f} s waiting for {what}; the job: {job}"))
            await asyncio.sleep(POLL_S)

    async def result(self, job_id: int) -> Result:
        """The job's stored result (its report): what `famswap run`'s worker handed to storage."""
        job = await self.job(job_id)
        assert self._store is not None
        return await self._store.get_result(job.guild_id, job_id, job.owner_id)

    async def close_storage(self) -> None:
        await self._storage.aclose()

    async def message(self, predicate: Callable[[FakeMessage], bool], *, timeout: float, what: str) -> FakeMessage:
        def find() -> FakeMessage | None:
            return next((m for m in self.fake.messages_in(self.family.general) if predicate(m)), None)

        return await self.until(find, timeout=timeout, what=what)

    async def start(self) -> FamswapRun:
        """Start `famswap run` and wait until its bot is connected and ready for commands."""
        assert self.run is None or self.run.returncode is not None, "one famswap run at a time"
        identified = len(self.fake.identifies)
        self.run = run = FamswapRun(self.env, self.log)
        await self.until(lambda: len(self.fake.identifies) > identified, timeout=START_TIMEOUT, what="the bot to connect")
        # on_ready comes once the guilds have streamed in; before it the bot may not know the guild yet.
        await self.until(lambda: "connected as" in run.output(), timeout=START_TIMEOUT, what="the bot to be ready")
        return run

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Signal the `famswap run` process (not its workers: it stops those) and wait for the whole group to end.

        Waits by polling, so the fake Discord in this event loop goes on serving the bot while it shuts down."""
        run = self.run
        assert run is not None
        if run.returncode is None:
            run.proc.send_signal(sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while (run.returncode is None or run.group_alive()) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        if run.returncode is None or run.group_alive():
            left = "it" if run.returncode is None else "its workers"
            run.kill_group()
            pytest.fail(self._explain(f"{sig.name} did not stop famswap run within {STOP_TIMEOUT:.0f} s ({left} lived on)"))
        return run.proc.returncode

    def shutdown(self) -> None:
        """Cleanup whatever happened: SIGTERM first (clean), then SIGKILL to the whole group."""
        run = self.run
        if run is None:
            return
        if run.returncode is None:
            run.proc.send_signal(signal.SIGTERM)
            try:
                run.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        run.kill_group()

    # --- what a user does ---------------------------------------------------------------------------------------

    async def slash(self, command: str, **options: Any) -> FakeInteraction:
        return await self.fake.slash(command, user=self.family.alice, channel=self.family.general, **options)

    async def identity_choice(self, name: str) -> str:
        """Type into /swap's identity option and take the suggestion for ``name``, as a user picks it."""
        choices = await self.fake.autocomplete(
            "swap", "identity", user=self.family.alice, channel=self.family.general, timeout=15, identity=name[:2]
        )
        return next(c["value"] for c in choices if c["name"] == name)

    async def start_swap(self, clip: bytes, clip_name: str, **options: Any) -> tuple[FakeInteraction, FakeMessage]:
        identity = await self.identity_choice("alice")
        ia = await self.slash("swap", clip=self.fake.upload(clip_name, clip), identity=identity, **options)
        await self.until(lambda: "Queued as job" in ia.reply_text, timeout=30, what=f"/swap {clip_name} to be queued")
        status = await self.message(lambda m: f"→ {clip_name}" in m.text, timeout=10, what=f"the status of {clip_name}")
        return ia, status


def job_number(ia: FakeInteraction) -> int:
    """The job id in /swap's answer ("Queued as job #12. …")."""
    found = re.search(r"Queued as job #(\d+)", ia.reply_text)
    assert found, ia.reply_text
    return int(found.group(1))


def edited_texts(message: FakeMessage) -> list[str]:
    """The embed descriptions the message showed, one per edit."""
    return ["\n".join(e.get("description") or "" for e in edit.get("embeds") or []) for edit in message.edits]


def results_for(scene: Scene, clip_name: str) -> list[FakeMessage]:
    return [m for m in scene.fake.messages_in(scene.family.general) if f"in *{clip_name}*" in m.text and "here is" in m.text]


def assert_playable_mp4(data: bytes, path: Path) -> None:
    assert data[4:8] == b"ftyp", "an MP4 file"
    path.write_bytes(data)
    decoded = subprocess.run(
        [find_ffmpeg().ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True, timeout=60
    )
    assert decoded.returncode == 0 and not decoded.stderr.strip(), f"the video does not decode cleanly: {decoded.stderr}"


@pytest.fixture(scope="module")
def short_clip(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The first second of the smallest clip, scaled down to 256 px: a movie clip that swaps quickly on a CPU."""
    out = tmp_path_factory.mktemp("clip") / "short.mp4"
    subprocess.run(
        [find_ffmpeg().ffmpeg, "-v", "error", "-y", "-i", str(clips / "tiny_man_noaudio.mp4"), "-t", "1",
         "-vf", "scale=256:-2", "-an", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
         "-movflags", "+faststart", str(out)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out.read_bytes()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
def family(fake: FakeDiscord) -> Family:
    alice = fake.add_user("alice")
    guild = fake.add_guild("The Family", alice, channels=("general",))
    return Family(guild, guild.channels[0], alice)


@pytest.fixture
def env(fake: FakeDiscord, home: Path, tmp_path: Path, landmarker_model: Path) -> dict[str, str]:
    """The environment of `famswap run`: nothing of the developer's own famswap settings leaks in."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("FAMSWAP_") and k != "DISCORD_TOKEN"}
    return {
        **inherited,
        **fake.environ(),
        "FAMSWAP_HOME": str(home),
        "FAMSWAP_KEY_FILE": str(tmp_path / "famswap.key"),
        "FAMSWAP_ENV_FILE": str(tmp_path / "no.env"),  # not the checkout's .env
        "FAMSWAP_MODEL_DIR": str(landmarker_model.parent),
        "FAMSWAP_MODEL": "lite",
        "FAMSWAP_DEVICE": "cpu",
        "FAMSWAP_TRAIN_MINUTES_CPU": str(TRAIN_MINUTES),
        "FAMSWAP_WARM_MINUTES_PER_DAY": "0",  # no background training between the steps this test times
        "FAMSWAP_LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
async def scene(fake: FakeDiscord, family: Family, env: dict[str, str], tmp_path: Path) -> AsyncIterator[Scene]:
    the_scene = Scene(fake, family, env, tmp_path / "famswap-run.log")
    try:
        yield the_scene
    finally:
        the_scene.shutdown()
        await the_scene.close_storage()
        if the_scene.run is not None:
            print(f"--- famswap run output (tail) ---\n{the_scene.log_tail(20000)}")


async def test_enroll_swap_and_restart_mid_job(scene: Scene, photos: Path, short_clip: bytes, tmp_path: Path) -> None:
    fake, family = scene.fake, scene.family
    await scene.start()

    # /enroll with real photos: a face, and a dog that must be turned down with a reason.
    ia = await scene.slash(
        "enroll",
        photo=fake.upload("me.jpg", (photos / "obama.jpg").read_bytes()),
        photo2=fake.upload("dog.jpg", (photos / "dog_no_human_face.jpg").read_bytes()),
    )
    await scene.until(lambda: "Got 2 new files" in ia.reply_text, timeout=30, what="the /enroll answer")
    assert ia.callbacks[0]["type"] == 5, "deferred within Discord's 3 s"
    enrolling = await scene.message(lambda m: "Enrolling alice" in m.text, timeout=10, what="the enroll status")
    summary = await scene.message(lambda m: "is enrolled" in m.text, timeout=JOB_TIMEOUT, what="the face-set summary")
    assert summary.reply_to == enrolling.id and summary.mentions == [family.alice.id]
    assert "kept from 2 uploads" in summary.text and "• dog.jpg: No face found" in summary.text, summary.text
    assert "me.jpg" not in summary.text, "only the rejected upload is listed"
    assert len(summary.filenames) == 1 and summary.filenames[0].startswith("faces."), "the thumbnail grid"
    await scene.until(lambda: "Done" in enrolling.text, timeout=30, what="the enroll status to say done")

    # /swap a short clip: the status message follows the job, the result replies to it.
    ia, status = await scene.start_swap(short_clip, "beach.mp4")
    assert ia.callbacks[0]["type"] == 5 and ia.replies[0].ephemeral
    assert "Queued" in status.text and family.alice.mention in status.text
    result = await scene.message(lambda m: "in *beach.mp4*" in m.text, timeout=JOB_TIMEOUT, what="the swap result")
    assert "here is **alice**" in result.text, result.text
    assert result.reply_to == status.id and result.mentions == [family.alice.id]
    assert result.filenames == ["beach-famswap.mp4", "before-after.gif"]
    video = result.file("beach-famswap.mp4")
    assert len(video) <= family.guild.filesize_limit, "fits the server's upload limit"
    assert_playable_mp4(video, tmp_path / "beach-result.mp4")
    assert result.file("before-after.gif")[:4] == b"GIF8"
    await scene.until(lambda: "Done" in status.text, timeout=30, what="the swap status to say done")
    assert any("⚙️" in text for text in edited_texts(status)), f"progress was shown: {edited_texts(status)}"

    # Another swap, during which `famswap run` is stopped twice: SIGTERM (a clean stop: its worker checkpoints the
    # job and hands it back), then SIGKILL of the supervisor alone, as the OOM killer would: its worker must notice
    # and do the same rather than live on beside the next one. The job resumes; its result comes once.
    ia, status = await scene.start_swap(short_clip, "party.mp4", quality="best")
    job_id = job_number(ia)
    training = await scene.job_until(
        job_id, lambda j: j.status is JobStatus.RUNNING and j.progress.stage == "train",
        timeout=JOB_TIMEOUT, what="the worker to record that it is training",
    )  # fmt: skip
    first = scene.run
    assert first is not None
    assert await scene.stop(signal.SIGTERM) == 0, "SIGTERM is a clean stop"
    assert "interrupted by shutdown" in first.output(), "the worker checkpointed and handed the job back"
    handed_back = await scene.job(job_id)
    assert handed_back.status is JobStatus.QUEUED and handed_back.worker_id is None, handed_back
    assert handed_back.state.get("stage") == "train" and handed_back.checkpoint is not None, "a resume point"
    assert not results_for(scene, "party.mp4"), "not finished before the restart"

    # The restarted run's worker claims the job (from its recorded resume point). Killing the supervisor right
    # then leaves the resumed job far from done: the rest of its training alone takes seconds.
    second = await scene.start()
    await scene.job_until(
        job_id, lambda j: j.status is JobStatus.RUNNING and j.worker_id not in (None, training.worker_id),
        timeout=JOB_TIMEOUT, what="the restarted famswap run to take the job again",
    )  # fmt: skip
    assert await scene.stop(signal.SIGKILL) == -signal.SIGKILL  # returns once its worker is gone too
    assert "interrupted by shutdown" in second.output(), "the orphaned worker checkpointed and handed the job back"
    handed_back = await scene.job(job_id)
    assert handed_back.status is JobStatus.QUEUED and handed_back.worker_id is None, handed_back
    assert not results_for(scene, "party.mp4"), "not finished before the second restart"

    third = await scene.start()
    result = await scene.message(lambda m: "in *party.mp4*" in m.text, timeout=JOB_TIMEOUT, what="the result after restart")
    assert "here is **alice**" in result.text, result.text
    assert result.reply_to == status.id and result.filenames == ["party-famswap.mp4", "before-after.gif"]
    assert len(result.file("party-famswap.mp4")) <= family.guild.filesize_limit
    assert "resuming after stage" in second.output() + third.output(), "continued from its checkpoint, not from scratch"
    await scene.until(lambda: "Done" in status.text, timeout=30, what="the restarted bot to finish the status")
    assert (await scene.job(job_id)).status is JobStatus.SUCCEEDED
    await asyncio.sleep(3 * 2.0)  # three passes of the bot's poller (every 2 s): nothing is posted again
    assert len(results_for(scene, "party.mp4")) == 1, "posted exactly once"
    assert len(results_for(scene, "beach.mp4")) == 1, "the first result was not posted again by the new process"
    assert fake.unhandled == [], f"the bot used routes the fake does not know: {fake.unhandled}"
    assert await scene.stop(signal.SIGTERM) == 0
    assert "Traceback" not in scene.log.read_text(errors="replace"), "no crash logged"


@pytest.fixture(scope="module")
def two_person_clip(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Half a second of two_people.jpg (two faces of about the same size), 360 px wide: a two-person scene."""
    out = tmp_path_factory.mktemp("clip") / "two.mp4"
    subprocess.run(
        [find_ffmpeg().ffmpeg, "-v", "error", "-y", "-loop", "1", "-i", str(photos / "two_people.jpg"), "-t", "0.4",
         "-r", "25", "-vf", "scale=360:-2", "-an", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
         str(out)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out.read_bytes()


async def test_two_people_in_one_swap(scene: Scene, photos: Path, two_person_clip: bytes, tmp_path: Path) -> None:
    """/swap with a second person on a two-person clip: the face picker asks who alice is (placing both would be a
    guess), Grandpa takes the other face, and the result shows both swapped, from one job."""
    fake = scene.fake
    await scene.start()
    ia = await scene.slash("enroll", photo=fake.upload("me.jpg", (photos / "obama.jpg").read_bytes()))
    await scene.message(lambda m: "**alice** is enrolled" in m.text, timeout=JOB_TIMEOUT, what="alice's face set")
    ia = await scene.slash("enroll", photo=fake.upload("gp.jpg", (photos / "biden.jpg").read_bytes()), name="Grandpa")
    await scene.until(lambda: ia.replies and ia.replies[0].buttons, timeout=30, what="the consent question")
    await fake.click(ia.replies[0], user=scene.family.alice, label="Yes, Grandpa agreed")
    await scene.message(lambda m: "**Grandpa** is enrolled" in m.text, timeout=JOB_TIMEOUT, what="Grandpa's face set")

    grandpa = await scene.identity_choice("Grandpa · enrolled on their behalf")
    ia, status = await scene.start_swap(two_person_clip, "duet.mp4", identity2=grandpa)
    sheet = await scene.message(lambda m: "Which one should become **alice**" in m.text, timeout=JOB_TIMEOUT,
                                what="the face picker")  # fmt: skip
    assert [b["label"] for b in sheet.buttons] == ["Face 1", "Face 2"] and sheet.filenames == ["faces.jpeg"]
    pick = await fake.click(sheet, user=scene.family.alice, label="Face 2")
    await scene.until(lambda: "Queued as job" in pick.reply_text, timeout=30, what="the swap with the face chosen")
    result = await scene.message(lambda m: "in *duet.mp4*" in m.text and "here is" in m.text, timeout=JOB_TIMEOUT,
                                 what="the swap result")  # fmt: skip
    assert "here is **alice and Grandpa**" in result.text, result.text
    assert_playable_mp4(result.file("duet-famswap.mp4"), tmp_path / "duet.mp4")
    job = await scene.job(job_number(pick))
    assert job.status is JobStatus.SUCCEEDED and len(job.identity_ids) == 2
    assert [(c.identity_name, c.face) for c in job.payload.cast()] == [("alice", 1), ("Grandpa", None)]
    report = (await scene.result(job.id)).report
    assert [(p["identity"], p["face"]) for p in report["people"]] == [("alice", 2), ("Grandpa", 1)]
    assert all(p["swapped"] == report["frames"] == 10 for p in report["people"]), report["people"]
    assert await scene.stop(signal.SIGTERM) == 0
    assert "Traceback" not in scene.log.read_text(errors="replace"), "no crash logged"


@pytest.mark.parametrize("problem", ["wrong token", "Discord unreachable"])
async def test_run_that_cannot_log_in_says_why_in_one_line(
    fake: FakeDiscord, family: Family, env: dict[str, str], tmp_path: Path, problem: str
) -> None:
    if problem == "wrong token":
        env = {**env, "DISCORD_TOKEN": "a-revoked-token"}
        expected_code, expected_text = 2, "DISCORD_TOKEN"
    else:
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**env, "FAMSWAP_DISCORD_API": f"http://127.0.0.1:{port}/api/v10"}
        expected_code, expected_text = 1, f"Could not reach Discord at http://127.0.0.1:{port}/api/v10"
    run = FamswapRun(env, tmp_path / "famswap-run.log")
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while run.returncode is None and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)  # the fake goes on answering meanwhile
        output = run.output()
        assert run.returncode == expected_code, output
        errors = [line for line in output.splitlines() if line.startswith("famswap:")]
        assert len(errors) == 1 and expected_text in errors[0], output
        assert "Traceback" not in output, output
        assert not run.group_alive(), "its worker is stopped too"
    finally:
        run.kill_group()
