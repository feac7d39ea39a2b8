"""One person per enrollment, end to end: the real bot against the fake Discord, the worker's real prepare job in
this process. A selfie video and a photo of someone else: the reply names the rejected photo and why. Later, a photo
of someone else for the same person: the bot asks, and adds it only on "Add anyway" ("Leave them out" stores nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import Settings
from storage import JobKind, JobStatus, Storage, UploadStatus
from tests.bot.conftest import BotRunner, Family
from tests.bot.fake_discord import FakeDiscord
from tests.worker.workerkit import cut_clip, small_photo
from worker.loop import Worker

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def settings(fake: FakeDiscord, home: Path, tmp_path: Path, model_dir: Path) -> Settings:
    environ = {
        **fake.environ(),
        "FAMSWAP_HOME": str(home),
        "FAMSWAP_KEY_FILE": str(tmp_path / "famswap.key"),
        "FAMSWAP_MODEL_DIR": str(model_dir),
        "FAMSWAP_MAX_UPLOAD_MB": "1",
        "FAMSWAP_MAX_CLIP_SECONDS": "20",
    }
    return Settings.load(environ, env_file=tmp_path / "no.env")


async def _run_prepare(settings: Settings, store: Storage) -> int:
    """Run the next queued prepare job with the worker's own code; returns its id."""
    worker = Worker(settings, "cpu", worker_id="test-worker")
    job = await store.claim(worker.worker_id, kinds=[JobKind.PREPARE])
    assert job is not None, "no prepare job was queued"
    await worker.run_job(store, job)
    done = await store.get_job(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    return job.id


async def test_enroll_names_the_photo_of_someone_else_and_asks_before_adding_another_person(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, settings: Settings,
    clips: Path, photos: Path, tmp_path: Path,
) -> None:  # fmt: skip
    selfie = cut_clip(clips / "selfie_man.mp4", tmp_path / "selfie_man.mp4", 50, 360)
    ia = await fake.slash(
        "enroll", user=family.alice, channel=family.general,
        video=fake.upload("selfie_man.mp4", selfie.read_bytes()),
        photo=fake.upload("obama.jpg", (photos / "obama.jpg").read_bytes()),
    )  # fmt: skip
    await fake.wait_for(lambda: "Got 2 new files" in ia.reply_text, what="the enroll answer")
    await _run_prepare(settings, store)
    result = await fake.wait_message(family.general, lambda m: "is enrolled" in m.text, timeout=30,
                                     what="the face-set summary")
    assert "obama.jpg: obama.jpg shows someone else — not the person in selfie_man.mp4." in result.text
    [identity] = await store.list_identities(family.guild.id, family.alice.id)
    faces = identity.face_count
    assert faces >= 1

    # Later: a photo of another man. Nothing is added until alice answers; bob cannot answer for her.
    biden = small_photo(photos / "biden.jpg", tmp_path / "biden.jpg")
    ia = await fake.slash("enroll", user=family.alice, channel=family.general,
                          photo=fake.upload("biden.jpg", biden.read_bytes()))
    await fake.wait_for(lambda: "Got 1 new file" in ia.reply_text, what="the second enroll answer")
    await _run_prepare(settings, store)
    question = await fake.wait_message(family.general, lambda m: "Add them to **alice** anyway?" in m.text,
                                       timeout=30, what="the question")
    assert "biden.jpg does not look like alice as enrolled before" in question.text
    assert [b["label"] for b in question.buttons] == ["Add anyway", "Leave them out"]
    assert (await store.get_identity(family.guild.id, identity.id)).face_count == faces
    nosy = await fake.click(question, user=family.bob, label="Add anyway")
    await fake.wait_for(lambda: "Only <@" in nosy.reply_text, what="the refusal to bob")

    pressed = await fake.click(question, user=family.alice, label="Add anyway")
    await fake.wait_for(lambda: "Adding biden.jpg to **alice**" in pressed.reply_text, what="the answer")
    await fake.wait_for(lambda: not question.buttons, what="the buttons to go")
    await _run_prepare(settings, store)
    added = await fake.wait_message(family.general, lambda m: "is enrolled" in m.text and m.id != result.id,
                                    timeout=30, what="the new face-set summary")
    assert f"**alice** is enrolled: {faces + 1} faces" in added.text

    # Another photo of someone else, left out this time: marked so, and the face set stays as it was.
    ia = await fake.slash("enroll", user=family.alice, channel=family.general,
                          photo=fake.upload("glasses.jpg", (photos / "man_curly_glasses.jpg").read_bytes()))
    await fake.wait_for(lambda: "Got 1 new file" in ia.reply_text, what="the third enroll answer")
    await _run_prepare(settings, store)
    question = await fake.wait_message(family.general, lambda m: "glasses.jpg does not look like alice" in m.text,
                                       timeout=30, what="the second question")
    pressed = await fake.click(question, user=family.alice, label="Leave them out")
    await fake.wait_for(lambda: "glasses.jpg left out" in pressed.reply_text, what="the answer")
    [upload] = [u for u in await store.list_uploads(family.guild.id, identity.id) if u.filename == "glasses.jpg"]
    assert upload.status is UploadStatus.REJECTED and "left out" in (upload.reason or "")
    assert (await store.get_identity(family.guild.id, identity.id)).face_count == faces + 1
