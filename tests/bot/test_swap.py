"""/swap and the progress poller: status message edits, the result, restarts, rate limits and Discord's limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.errors import NotFound
from storage import JobKind, JobStatus, Storage
from tests.bot.conftest import BotRunner, Family, StandInWorker, image_bytes, ready_identity
from tests.bot.fake_discord import FakeDiscord, FakeInteraction, FakeMessage

STATUS_EDIT = r"^/channels/\d+/messages/\d+$"


@pytest.fixture
def clip(clips: Path) -> bytes:
    return (clips / "selfie_man.mp4").read_bytes()


async def start_swap(fake: FakeDiscord, family: Family, clip: bytes, identity_id: int, **options) -> tuple[FakeInteraction, FakeMessage]:
    ia = await fake.slash(
        "swap", user=family.alice, channel=family.general, clip=fake.upload("beach.mp4", clip),
        identity=str(identity_id), **options,
    )
    await fake.wait_for(lambda: "Queued as job" in ia.reply_text, what="the swap to be queued")
    status = await fake.wait_message(family.general, lambda m: "→ beach.mp4" in m.text, what="the status message")
    return ia, status


async def test_swap_shows_progress_then_posts_the_result(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    identity = await ready_identity(store, family.guild, family.alice)
    ia, status = await start_swap(fake, family, clip, identity.id, quality="best")
    assert ia.callbacks[0]["type"] == 5 and ia.replies[0].ephemeral
    assert str(status.id) in ia.reply_text, "the ephemeral answer links the status message"
    assert "Queued — 1st in line" in status.text and f"<@{family.alice.id}>" in status.text

    [job] = await store.list_jobs(family.guild.id)
    assert job.payload.quality == "best" and job.payload.max_bytes <= family.guild.filesize_limit
    assert await store.read_blob(job.input) == clip, "the clip is stored encrypted, as sent"

    running = await worker.claim(JobKind.SWAP)
    await worker.progress(running, "train", 40.0, preview=image_bytes("JPEG"))
    await fake.wait_for(lambda: "Learning the face" in status.text, what="the progress edit")
    assert "▰" in status.text and "40%" in status.text
    assert status.filenames == ["preview.jpeg"], "the latest preview image"

    await worker.swap(clip, job=running)
    result = await fake.wait_message(family.general, lambda m: "here is **alice**" in m.text, what="the result")
    assert result.reply_to == status.id and result.mentions == [family.alice.id]
    assert result.filenames == ["beach-famswap.mp4", "before-after.gif"]
    video = result.file("beach-famswap.mp4")
    assert video == clip and len(video) <= family.guild.filesize_limit
    await fake.wait_for(lambda: "Done" in status.text, what="the final status")
    assert status.filenames == [], "the preview goes when the job is done"
    for _ in range(50):  # the poller marks the update shown right after its edit
        if not await store.pending_updates(0):
            break
        await asyncio.sleep(0.05)
    assert await store.pending_updates(0) == [], "everything shown"


async def test_result_still_posted_after_a_bot_restart(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    identity = await ready_identity(store, family.guild, family.alice)
    _, status = await start_swap(fake, family, clip, identity.id)
    await runner.stop()

    # The worker goes on while the bot is down.
    job = await worker.claim(JobKind.SWAP)
    await worker.progress(job, "convert", 70.0)
    await runner.start()
    await fake.wait_for(lambda: "Swapping faces" in status.text, what="the status message to keep updating")

    await runner.stop()
    await worker.swap(clip, job=job)
    await runner.start()
    result = await fake.wait_message(family.general, lambda m: "here is **alice**" in m.text, what="the result after restart")
    assert result.reply_to == status.id and "beach-famswap.mp4" in result.filenames
    await fake.wait_for(lambda: "Done" in status.text, what="the final status")
    await asyncio.sleep(0.3)
    assert len([m for m in fake.messages_in(family.general) if "here is" in m.text]) == 1, "posted once"


async def test_rate_limited_edits_do_not_crash(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    identity = await ready_identity(store, family.guild, family.alice)
    _, status = await start_swap(fake, family, clip, identity.id)
    job = await worker.claim(JobKind.SWAP)
    # The claim's own edit first: the injected 429 must meet the progress edit, not this one.
    await fake.wait_for(lambda: "⚙️" in status.text, what="the running status")

    # A short 429: discord.py waits and retries the same edit.
    fake.rate_limit_next("PATCH", STATUS_EDIT, retry_after=0.2)
    await worker.progress(job, "train", 10.0)
    await fake.wait_for(lambda: "10%" in status.text, what="the edit after a short 429")
    assert [r.status for r in fake.requests_to("PATCH", STATUS_EDIT)][-2:] == [429, 200]

    # A 429 longer than max_ratelimit_timeout: RateLimited, that update is skipped, nothing dies.
    fake.rate_limit_next("PATCH", STATUS_EDIT, retry_after=120.0)
    await worker.progress(job, "train", 50.0)
    await fake.wait_for(lambda: fake.requests_to("PATCH", STATUS_EDIT)[-1].status == 429, what="the long 429")
    await asyncio.sleep(0.5)
    assert "50%" not in status.text
    assert runner.bot is not None and runner.bot.get_cog("Swap").poller._task is not None  # type: ignore[union-attr]
    assert not runner.bot.get_cog("Swap").poller._task.done()  # type: ignore[union-attr]

    # The result is not held back by the progress edit's rate limit.
    await worker.swap(clip, job=job)
    await fake.wait_message(family.general, lambda m: "here is **alice**" in m.text, what="the result")
    await fake.wait_for(lambda: "Done" in status.text, what="the final status")


async def test_the_result_message_carries_the_swaps_notes(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    identity = await ready_identity(store, family.guild, family.alice)
    await start_swap(fake, family, clip, identity.id)
    note = ("The face turns further than in the enrolled photos in 30 of 200 frames, so the swap fades out there: "
            "for turned heads, enroll a video turning your head left and right.")  # fmt: skip
    await worker.swap(clip, report={"frames": 200, "notes": [note]})
    result = await fake.wait_message(family.general, lambda m: "here is **alice**" in m.text, what="the result")
    assert note in result.text


async def test_old_status_message_is_replaced(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    identity = await ready_identity(store, family.guild, family.alice)
    _, status = await start_swap(fake, family, clip, identity.id)
    fake.age_message(status)  # now its edits answer 30046
    job = await worker.claim(JobKind.SWAP)
    await worker.progress(job, "train", 20.0)
    fresh = await fake.wait_message(family.general, lambda m: "20%" in m.text, what="a fresh status message")
    assert fresh.id != status.id
    await fake.wait_for(lambda: status.deleted, what="the stale one to be removed")
    assert [r.status for r in fake.requests_to("PATCH", rf"/messages/{status.id}$")] == [400]
    await worker.progress(job, "convert", 90.0)
    await fake.wait_for(lambda: "90%" in fresh.text, what="edits to go to the fresh message")


async def test_video_over_the_upload_limit_gets_a_smaller_copy(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    identity = await ready_identity(store, family.guild, family.alice)
    _, status = await start_swap(fake, family, clip, identity.id)
    fake.reject_next_upload()  # Discord answers 413 / 40005 to the message with the video
    await worker.swap(clip)
    first = await fake.wait_message(family.general, lambda m: "here is **alice**" in m.text, what="the first result")
    assert first.filenames == ["before-after.gif"] and "smaller copy" in first.text

    refit = await worker.claim(JobKind.REFIT)
    assert refit.payload.refit_of > 0 and refit.payload.max_bytes < family.guild.filesize_limit
    assert await store.read_blob(refit.input) == clip, "the worker gets the video to shrink"
    smaller = clip[: len(clip) // 2]
    await worker.swap(smaller, job=refit)
    second = await fake.wait_message(family.general, lambda m: "smaller copy of **alice**" in m.text, what="the smaller copy")
    assert second.file("beach-famswap.mp4") == smaller and second.reply_to == status.id


async def test_video_too_big_for_the_guild_is_not_even_tried(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    identity = await ready_identity(store, family.guild, family.alice)
    await start_swap(fake, family, clip, identity.id)
    huge = b"\x00\x00\x00\x18ftypmp42" + bytes(family.guild.filesize_limit + 1)
    await worker.swap(huge)
    first = await fake.wait_message(family.general, lambda m: "here is **alice**" in m.text, what="the result")
    assert first.filenames == ["before-after.gif"] and "upload limit (10 MB)" in first.text
    assert not [r for r in fake.requests if r.status == 413], "no doomed upload"
    refit = await worker.claim(JobKind.REFIT)
    assert refit.payload.refit_of


async def test_failure_gets_a_short_message_with_the_hint(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    identity = await ready_identity(store, family.guild, family.alice)
    _, status = await start_swap(fake, family, clip, identity.id)
    job = await worker.claim(JobKind.SWAP)
    reason = "No face found in the clip between 0:03 and 0:09. Try a clip where the face is larger."
    await store.fail(job.id, worker.worker_id, reason, retry=False)
    failure = await fake.wait_message(family.general, lambda m: "sorry" in m.text, what="the failure message")
    assert reason in failure.text and failure.reply_to == status.id and failure.mentions == [family.alice.id]
    await fake.wait_for(lambda: "❌" in status.text, what="the failed status")


async def test_clip_with_several_faces_asks_which(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    identity = await ready_identity(store, family.guild, family.alice)
    await start_swap(fake, family, clip, identity.id)
    job = await worker.claim(JobKind.SWAP)
    # The worker's protocol: complete with the clip kept as the video, the contact sheet as the comparison.
    await store.complete(job.id, worker.worker_id, video=clip, comparison=image_bytes("JPEG", (120, 40)),
                         report={"needs_choice": True, "faces": 3})
    sheet = await fake.wait_message(family.general, lambda m: "has 3 faces" in m.text, what="the contact sheet")
    assert [b["label"] for b in sheet.buttons] == ["Face 1", "Face 2", "Face 3"]
    assert sheet.filenames == ["faces.jpeg"]

    nosy = await fake.click(sheet, user=family.bob, label="Face 1")
    await fake.wait_for(lambda: nosy.replies, what="bob's refusal")
    assert "Only <@" in nosy.reply_text

    await runner.restart()  # the buttons outlive the bot process
    pick = await fake.click(sheet, user=family.alice, label="Face 2")
    await fake.wait_for(lambda: "Queued as job" in pick.reply_text, what="the new job")
    await fake.wait_for(lambda: sheet.buttons == [] and "Face 2 chosen" in sheet.text, what="the buttons to go")
    chosen = await worker.claim(JobKind.SWAP)
    assert chosen.payload.track == 1 and await store.read_blob(chosen.input) == clip
    with pytest.raises(NotFound):  # the question's copy of the raw clip is gone once a face is chosen
        await store.get_result(family.guild.id, job.id, family.alice.id)


async def test_swap_menu_on_a_posted_clip_replies_to_it(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    await ready_identity(store, family.guild, family.bob)
    posted = fake.post_user_message(family.movies, family.carol, "lol", attachments=[fake.upload("dance.mp4", clip, ephemeral=False)])
    ia = await fake.message_command("Swap me into this clip", posted, user=family.bob)
    await fake.wait_for(lambda: "Queued as job" in ia.reply_text, what="the swap")
    await worker.swap(clip)
    result = await fake.wait_message(family.movies, lambda m: "here is **bob**" in m.text, what="the result")
    assert result.reply_to == posted.id and result.mentions == [family.bob.id]

    nobody = await fake.message_command("Swap me into this clip", posted, user=family.carol)
    await fake.wait_for(lambda: nobody.replies, what="carol's answer")
    assert "haven't enrolled your own face" in nobody.reply_text


async def test_wrong_clip_type_is_refused(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, photos: Path
) -> None:
    identity = await ready_identity(store, family.guild, family.alice)
    ia = await fake.slash("swap", user=family.alice, channel=family.general,
                          clip=fake.upload("clip.mp4", (photos / "obama.jpg").read_bytes()), identity=str(identity.id))
    await fake.wait_for(lambda: ia.replies, what="the refusal")
    assert "is a photo, but this needs a video clip" in ia.reply_text and ia.replies[0].ephemeral
    assert await store.list_jobs(family.guild.id) == [] and fake.messages_in(family.general) == []


async def test_status_and_cancel(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, clip: bytes
) -> None:
    identity = await ready_identity(store, family.guild, family.alice)
    _, status = await start_swap(fake, family, clip, identity.id)
    [job] = await store.list_jobs(family.guild.id)

    ia = await fake.slash("status", user=family.alice, channel=family.general)
    await fake.wait_for(lambda: ia.replies, what="the status answer")
    assert f"#{job.id}" in ia.reply_text and "queued" in ia.reply_text

    choices = await fake.autocomplete("cancel", "job", user=family.alice, channel=family.general)
    assert [c["value"] for c in choices] == [job.id]
    ia = await fake.slash("cancel", user=family.alice, channel=family.general, job=job.id)
    await fake.wait_for(lambda: ia.replies, what="the cancel answer")
    assert f"Cancelled job #{job.id}" in ia.reply_text
    await fake.wait_for(lambda: "Cancelled" in status.text, what="the status message to say cancelled")
    assert (await store.get_job(job.id)).status is JobStatus.CANCELLED



async def test_status_edits_are_spaced_and_stale_updates_dropped(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    await runner.restart(edit_interval=1.0)
    identity = await ready_identity(store, family.guild, family.alice)
    _, status = await start_swap(fake, family, clip, identity.id)
    job = await worker.claim(JobKind.SWAP)
    for percent in range(10, 90, 10):  # eight updates within a fraction of a second
        await worker.progress(job, "train", float(percent))
        await asyncio.sleep(0.05)
    await fake.wait_for(lambda: "80%" in status.text, what="the latest progress")
    edits = [r for r in fake.requests_to("PATCH", rf"/messages/{status.id}$") if r.status == 200]
    assert len(edits) <= 3, "at most one edit per interval; the states in between are never shown"
    assert all(b.at - a.at >= 0.9 for a, b in zip(edits, edits[1:], strict=False))


async def test_quota_refusal_is_friendly(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, clip: bytes
) -> None:
    identity = await ready_identity(store, family.guild, family.alice)
    ia = await fake.slash("famswap settings", user=family.alice, channel=family.general, queued_per_member=1)
    await fake.wait_for(lambda: ia.replies, what="the settings answer")
    await start_swap(fake, family, clip, identity.id)
    again = await fake.slash("swap", user=family.alice, channel=family.general, clip=fake.upload("b.mp4", clip),
                             identity=str(identity.id))
    await fake.wait_for(lambda: again.replies, what="the refusal")
    assert again.replies[0].ephemeral and "the limit is 1" in again.reply_text
    assert len(await store.list_jobs(family.guild.id)) == 1


async def test_swap_needs_a_face_set(fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, clip: bytes) -> None:
    empty = await store.create_identity(family.guild.id, family.alice.id, "alice")
    ia = await fake.slash("swap", user=family.alice, channel=family.general, clip=fake.upload("c.mp4", clip),
                          identity=str(empty.id))
    await fake.wait_for(lambda: ia.replies, what="the refusal")
    assert "face set is not usable yet" in ia.reply_text
    assert await store.list_jobs(family.guild.id) == []


async def test_two_people_in_one_swap_the_picker_asks_for_the_one_without_a_face(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    alice = await ready_identity(store, family.guild, family.alice)
    grandpa = await ready_identity(store, family.guild, family.alice, "Grandpa", on_behalf=True,
                                   consent_confirmed_by=family.alice.id)  # fmt: skip
    await start_swap(fake, family, clip, alice.id, identity2=str(grandpa.id), face2=2)
    job = await worker.claim(JobKind.SWAP)
    assert set(job.identity_ids) == {alice.id, grandpa.id}
    assert [(c.identity_name, c.face) for c in job.payload.cast()] == [("alice", None), ("Grandpa", 1)]
    assert job.payload.title == "alice and Grandpa → beach.mp4"
    # The worker asks about alice (Grandpa has face 2).
    await store.complete(job.id, worker.worker_id, video=clip, comparison=image_bytes("JPEG", (120, 40)),
                         report={"needs_choice": True, "faces": 3, "choose_for": "alice", "taken": [2]})
    sheet = await fake.wait_message(family.general, lambda m: "has 3 faces" in m.text, what="the contact sheet")
    assert "become **alice**" in sheet.text and "Face 2 already chosen" in sheet.text
    taken = await fake.click(sheet, user=family.alice, label="Face 2")
    await fake.wait_for(lambda: taken.replies, what="the refusal of a face already chosen")
    assert "already becoming **Grandpa**" in taken.reply_text and sheet.buttons
    pick = await fake.click(sheet, user=family.alice, label="Face 3")
    await fake.wait_for(lambda: "Queued as job" in pick.reply_text, what="the new job")
    chosen = await worker.claim(JobKind.SWAP)
    assert [(c.identity_id, c.face) for c in chosen.payload.cast()] == [(alice.id, 2), (grandpa.id, 1)]


async def test_the_second_face_needs_a_second_person(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, clip: bytes
) -> None:
    alice = await ready_identity(store, family.guild, family.alice)
    ia = await fake.slash("swap", user=family.alice, channel=family.general, clip=fake.upload("beach.mp4", clip),
                          identity=str(alice.id), face2=2)  # fmt: skip
    await fake.wait_for(lambda: ia.replies, what="the refusal")
    assert "identity2" in ia.reply_text and await store.list_jobs(family.guild.id) == []
