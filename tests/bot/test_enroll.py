"""/enroll and "Enroll faces from this message", through the real gateway and REST path, with real photos."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from storage import JobKind, Storage, UploadStatus
from tests.bot.conftest import BotRunner, Family, StandInWorker, ready_identity
from tests.bot.fake_discord import FakeDiscord, FakeUser


async def assert_nothing_stored(store: Storage, family: Family, user: FakeUser) -> None:
    assert await store.list_identities(family.guild.id, user.id) == []
    assert await store.list_jobs(family.guild.id) == []


async def test_enroll_photos_posts_faceset_summary(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, photos: Path
) -> None:
    obama, glasses = (photos / "obama.jpg").read_bytes(), (photos / "man_curly_glasses.jpg").read_bytes()
    ia = await fake.slash(
        "enroll", user=family.alice, channel=family.general,
        photo=fake.upload("obama.jpg", obama), photo2=fake.upload("dog.jpg", (photos / "dog_no_human_face.jpg").read_bytes()),
        video=None, photo3=fake.upload("glasses.jpg", glasses),
    )
    await fake.wait_for(lambda: "Got 3 new files" in ia.reply_text, what="the enroll answer")
    assert ia.callbacks[0]["type"] == 5, "deferred first"
    assert all(m.ephemeral for m in ia.replies)

    # Stored right away, before any worker ran: the upload links would expire.
    [identity] = await store.list_identities(family.guild.id, family.alice.id)
    assert identity.display_name == "alice" and not identity.on_behalf
    uploads = await store.list_uploads(family.guild.id, identity.id)
    assert sorted(u.filename for u in uploads) == ["dog.jpg", "glasses.jpg", "obama.jpg"]
    stored = {u.filename: await store.read_blob(u.blob) for u in uploads if u.blob}
    assert stored["obama.jpg"] == obama

    status = await fake.wait_message(family.general, lambda m: "Enrolling alice" in m.text, what="the status message")
    assert "Queued" in status.text

    await worker.prepare(rejected={"dog.jpg": "no human face found — use a photo where your face is clearly visible"})
    result = await fake.wait_message(family.general, lambda m: "is enrolled" in m.text, what="the face-set summary")
    assert result.reply_to == status.id
    assert result.mentions == [family.alice.id]
    assert "2 faces kept from 3 uploads" in result.text
    assert "dog.jpg: no human face found" in result.text
    assert result.filenames == ["faces.png"], "the thumbnail grid"
    await fake.wait_for(lambda: "Done" in status.text, what="the status message to say done")
    accepted = await store.list_uploads(family.guild.id, identity.id, status=UploadStatus.ACCEPTED)
    assert len(accepted) == 2


@pytest.mark.parametrize(
    ("filename", "make", "expected"),
    [
        ("photo.jpg", lambda p: b"hello, this is not a photo at all\n" * 20, "is a text file"),
        ("big.jpg", lambda p: b"\xff\xd8\xff\xe0" + bytes(1_200_000), "the limit is 1.0 MB"),
        ("empty.png", lambda p: b"", "is empty"),
        ("doc.pdf", lambda p: b"%PDF-1.7\n" + bytes(100), "a PDF document"),
    ],
)
async def test_bad_attachment_is_refused_and_nothing_stored(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, photos: Path, filename: str, make, expected: str
) -> None:
    good = fake.upload("obama.jpg", (photos / "obama.jpg").read_bytes())
    ia = await fake.slash("enroll", user=family.bob, channel=family.general, photo=good, photo2=fake.upload(filename, make(photos)))
    await fake.wait_for(lambda: ia.replies, what="the refusal")
    [reply] = ia.replies
    assert reply.ephemeral
    assert expected in reply.text and "⚠️" in reply.text
    assert fake.messages_in(family.general) == [], "nothing public"
    await assert_nothing_stored(store, family, family.bob)


async def test_size_discord_reports_is_not_trusted(fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage) -> None:
    # Discord says 1 kB; the bytes are 1.5 MB: the download stops at the limit.
    liar = fake.upload("small.jpg", b"\xff\xd8\xff\xe0" + bytes(1_500_000), size=1000)
    ia = await fake.slash("enroll", user=family.bob, channel=family.general, photo=liar)
    await fake.wait_for(lambda: ia.replies, what="the refusal")
    assert "larger than 1.0 MB" in ia.reply_text
    await assert_nothing_stored(store, family, family.bob)


async def test_enroll_without_any_file_explains(fake: FakeDiscord, runner: BotRunner, family: Family) -> None:
    ia = await fake.slash("enroll", user=family.bob, channel=family.general)
    await fake.wait_for(lambda: ia.replies, what="the answer")
    assert "Attach at least one photo" in ia.reply_text


async def test_on_behalf_enrollment_needs_the_confirm_click(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, photos: Path
) -> None:
    photo = fake.upload("biden.jpg", (photos / "biden.jpg").read_bytes())
    ia = await fake.slash("enroll", user=family.alice, channel=family.general, photo=photo, name="Grandpa")
    await fake.wait_for(lambda: ia.replies and ia.replies[0].buttons, what="the consent question")
    question = ia.replies[0]
    assert question.ephemeral and "on their behalf" in question.text and "Nothing is saved" in question.text
    await assert_nothing_stored(store, family, family.alice)

    # Someone else cannot answer for alice.
    other = await fake.click(question, user=family.bob, label="Yes, Grandpa agreed")
    await fake.wait_for(lambda: other.replies, what="the refusal to bob")
    assert "for someone else" in other.reply_text
    await assert_nothing_stored(store, family, family.alice)

    await fake.click(question, user=family.alice, label="Cancel")
    await fake.wait_for(lambda: "nothing was saved" in question.text, what="the cancel answer")
    assert question.buttons == []
    await assert_nothing_stored(store, family, family.alice)

    # Asked again and confirmed: stored, marked on-behalf, with who confirmed.
    ia = await fake.slash("enroll", user=family.alice, channel=family.general, photo=photo, name="Grandpa")
    await fake.wait_for(lambda: ia.replies and ia.replies[0].buttons, what="the consent question")
    await fake.click(ia.replies[0], user=family.alice, label="Yes, Grandpa agreed")
    await fake.wait_for(lambda: "Got 1 new file for **Grandpa**" in ia.reply_text, what="the confirmation")
    [identity] = await store.list_identities(family.guild.id, family.alice.id)
    assert identity.on_behalf and identity.consent_confirmed_by == family.alice.id
    assert identity.consent_confirmed_at is not None and identity.subject_user_id is None


async def test_on_behalf_enrollment_left_unanswered_stores_nothing(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # By name: load_extension executed the cog module afresh when the bot started.
    monkeypatch.setattr(sys.modules["bot.cogs.enroll"], "CONSENT_TIMEOUT", 0.5)
    photo = fake.upload("biden.jpg", (photos / "biden.jpg").read_bytes())
    ia = await fake.slash("enroll", user=family.alice, channel=family.general, photo=photo, member=family.bob)
    await fake.wait_for(lambda: "nothing was saved" in ia.reply_text, what="the question to time out")
    await assert_nothing_stored(store, family, family.alice)


async def test_enroll_faces_from_a_posted_message(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, photos: Path
) -> None:
    posted = fake.post_user_message(
        family.general, family.bob, "holiday pics",
        attachments=[fake.upload("beach.jpg", (photos / "obama.jpg").read_bytes(), ephemeral=False)],
    )
    ia = await fake.message_command("Enroll faces from this message", posted, user=family.bob)
    form = await fake.submit_modal(ia, **{"Whose face is it? (empty: mine)": ""})
    await fake.wait_for(lambda: "Got 1 new file for **bob**" in form.reply_text, what="the enroll answer")
    [identity] = await store.list_identities(family.guild.id, family.bob.id)
    [upload] = await store.list_uploads(family.guild.id, identity.id)
    assert upload.filename == "beach.jpg"

    # Sending the same photo again adds nothing.
    again = await fake.message_command("Enroll faces from this message", posted, user=family.bob)
    form = await fake.submit_modal(again)
    await fake.wait_for(lambda: "already have this file" in form.reply_text, what="the duplicate answer")


async def test_enrolling_from_someone_elses_message_is_on_behalf_of_its_author(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, photos: Path
) -> None:
    posted = fake.post_user_message(
        family.general, family.bob, "me at the beach",
        attachments=[fake.upload("beach.jpg", (photos / "obama.jpg").read_bytes(), ephemeral=False)],
    )
    ia = await fake.message_command("Enroll faces from this message", posted, user=family.alice)
    form = await fake.submit_modal(ia, **{"Whose face is it? (empty: mine)": ""})
    await fake.wait_for(lambda: form.replies and form.replies[0].buttons, what="the consent question")
    assert "on their behalf" in form.reply_text and "bob" in form.reply_text
    await assert_nothing_stored(store, family, family.alice)

    await fake.click(form.replies[0], user=family.alice, label="Yes, bob agreed")
    await fake.wait_for(lambda: "Got 1 new file for **bob**" in form.reply_text, what="the enroll answer")
    [identity] = await store.list_identities(family.guild.id, family.alice.id)
    assert identity.owner_id == family.alice.id and identity.on_behalf
    assert identity.subject_user_id == family.bob.id, "the author can claim and delete it"
    assert identity.consent_confirmed_by == family.alice.id

    # The author is told, with how to remove it, and can remove it.
    [dm] = await fake.wait_for(lambda: fake.dms_to(family.bob), what="the DM to the author")
    assert f"<@{family.alice.id}>" in dm.text and "/forget" in dm.text and "The Family" in dm.text
    await store.forget_identity(family.guild.id, identity.id, family.bob.id)
    assert await store.list_identities(family.guild.id, family.alice.id) == []


async def test_the_author_with_closed_dms_is_told_in_the_channel(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, photos: Path
) -> None:
    family.bob.dms_open = False
    posted = fake.post_user_message(
        family.general, family.bob, "",
        attachments=[fake.upload("beach.jpg", (photos / "obama.jpg").read_bytes(), ephemeral=False)],
    )
    ia = await fake.message_command("Enroll faces from this message", posted, user=family.alice)
    form = await fake.submit_modal(ia, **{"Whose face is it? (empty: mine)": "Bobby"})
    await fake.wait_for(lambda: form.replies and form.replies[0].buttons, what="the consent question")
    await fake.click(form.replies[0], user=family.alice, label="Yes, Bobby agreed")
    note = await fake.wait_message(family.general, lambda m: family.bob.id in m.mentions, what="the note to bob")
    assert "/forget" in note.text and "Bobby" in note.text
    [identity] = await store.list_identities(family.guild.id, family.alice.id)
    assert identity.subject_user_id == family.bob.id and identity.display_name == "Bobby"


async def test_enroll_over_quota_stores_nothing(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, photos: Path
) -> None:
    identity = await ready_identity(store, family.guild, family.bob)
    for _ in range(store.limits.max_queued_per_user):  # bob's queue is full
        await store.enqueue(family.guild.id, family.bob.id, JobKind.SWAP, {}, enforce_quota=False)
    photo = fake.upload("new.jpg", (photos / "obama.jpg").read_bytes())
    ia = await fake.slash("enroll", user=family.bob, channel=family.general, photo=photo)
    await fake.wait_for(lambda: ia.replies, what="the refusal")
    assert f"the limit is {store.limits.max_queued_per_user}" in ia.reply_text
    assert await store.list_uploads(family.guild.id, identity.id) == [], "the photo was not stored"
