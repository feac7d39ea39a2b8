"""'Results visible to: the requester': results and training previews reach the requester alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import JobKind, Storage
from tests.bot.conftest import BotRunner, Family, StandInWorker, image_bytes, ready_identity
from tests.bot.fake_discord import FakeDiscord, FakeInteraction, FakeMessage


@pytest.fixture
def clip(clips: Path) -> bytes:
    return (clips / "selfie_man.mp4").read_bytes()


async def private_swap(fake: FakeDiscord, family: Family, store: Storage, clip: bytes) -> tuple[FakeInteraction, FakeMessage]:
    await store.update_guild_settings(family.guild.id, result_visibility="owner")
    identity = await ready_identity(store, family.guild, family.alice)
    ia = await fake.slash("swap", user=family.alice, channel=family.general, clip=fake.upload("beach.mp4", clip),
                          identity=str(identity.id))
    await fake.wait_for(lambda: "Queued as job" in ia.reply_text, what="the swap to be queued")
    status = await fake.wait_message(family.general, lambda m: "→ beach.mp4" in m.text, what="the status message")
    return ia, status


def public_results(fake: FakeDiscord, family: Family) -> list[FakeMessage]:
    return [m for m in fake.messages_in(family.general) if m.filenames or "here is" in m.text]


async def test_private_results_and_previews_go_to_the_requester_only(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    ia, status = await private_swap(fake, family, store, clip)
    job = await worker.claim(JobKind.SWAP)
    await worker.progress(job, "train", 40.0, preview=image_bytes("JPEG"))
    await fake.wait_for(lambda: "Learning the face" in status.text, what="the progress edit")
    await fake.wait_for(lambda: ia.replies[0].filenames == ["preview.jpeg"], what="the preview in the private answer")
    assert ia.replies[0].ephemeral
    assert status.filenames == [], "no preview in the channel"

    await worker.swap(clip, job=job)
    await fake.wait_for(lambda: any("here is **alice**" in m.text for m in ia.followups), what="the private result")
    [result] = [m for m in ia.followups if "here is **alice**" in m.text]
    assert result.ephemeral and result.filenames == ["beach-famswap.mp4", "before-after.gif"]
    await fake.wait_for(lambda: "requester only" in status.text, what="the final status")
    assert public_results(fake, family) == []


async def test_private_result_goes_by_dm_once_the_interaction_expired(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    ia, status = await private_swap(fake, family, store, clip)
    fake.expire(ia)
    await worker.swap(clip)
    [dm] = await fake.wait_for(lambda: fake.dms_to(family.alice), what="the result by DM")
    assert "here is **alice**" in dm.text and "The Family" in dm.text
    assert sorted(dm.files) == ["beach-famswap.mp4", "before-after.gif"]
    await fake.wait_for(lambda: "requester only" in status.text, what="the final status")
    assert public_results(fake, family) == []


async def test_private_result_with_closed_dms_leaves_a_show_me_button(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, worker: StandInWorker, clip: bytes
) -> None:
    ia, _ = await private_swap(fake, family, store, clip)
    fake.expire(ia)
    family.alice.dms_open = False
    await worker.swap(clip)
    note = await fake.wait_message(family.general, lambda m: "Show me" in str(m.buttons), what="the note")
    assert note.mentions == [family.alice.id] and note.filenames == []
    assert public_results(fake, family) == []

    nosy = await fake.click(note, user=family.bob, label="Show me")
    await fake.wait_for(lambda: nosy.replies, what="the refusal")
    assert "only for" in nosy.reply_text and not nosy.replies[0].filenames

    mine = await fake.click(note, user=family.alice, label="Show me")
    await fake.wait_for(lambda: any(m.filenames for m in mine.replies), what="the result, shown privately")
    [shown] = [m for m in mine.replies if m.filenames]
    assert shown.ephemeral and shown.filenames == ["beach-famswap.mp4", "before-after.gif"]
