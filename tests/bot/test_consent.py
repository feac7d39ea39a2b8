"""Consent from the bot's side: whose face may be used, sharing, the subject's veto, forgetting, admin limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.errors import NotFound
from storage import JobStatus, Storage
from tests.bot.conftest import BotRunner, Family, ready_identity
from tests.bot.fake_discord import FakeDiscord, FakeInteraction


@pytest.fixture
def clip(clips: Path) -> bytes:
    return (clips / "tiny_man_noaudio.mp4").read_bytes()[:200_000]  # the header is at the front; the bot only sniffs it


async def answer(fake: FakeDiscord, ia: FakeInteraction) -> str:
    await fake.wait_for(lambda: ia.replies, what=f"an answer to {ia.payload['data'].get('name')}")
    return ia.reply_text


async def test_swap_with_someone_elses_face_is_refused_naming_whom_to_ask(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, clip: bytes
) -> None:
    await ready_identity(store, family.guild, family.alice, "Alice")
    assert await fake.autocomplete("swap", "identity", user=family.bob, channel=family.general, identity="Al") == []
    ia = await fake.slash("swap", user=family.bob, channel=family.general, clip=fake.upload("c.mp4", clip), identity="Alice")
    text = await answer(fake, ia)
    assert f"<@{family.alice.id}>" in text and ia.replies[0].ephemeral
    assert await store.list_jobs(family.guild.id) == []


async def test_share_lets_them_and_unshare_cancels_their_queued_job(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, clip: bytes
) -> None:
    alice_id = await ready_identity(store, family.guild, family.alice, "Alice")
    share = await fake.slash("share", user=family.alice, channel=family.general, identity=str(alice_id.id), who=family.bob)
    assert "now shared with" in await answer(fake, share)

    choices = await fake.autocomplete("swap", "identity", user=family.bob, channel=family.general, identity="al")
    assert choices == [{"name": "Alice · shared with you", "value": str(alice_id.id)}]
    swap = await fake.slash("swap", user=family.bob, channel=family.general, clip=fake.upload("c.mp4", clip), identity="Alice")
    await fake.wait_for(lambda: "Queued as job" in swap.reply_text, what="bob's swap")
    status = await fake.wait_message(family.general, lambda m: "Alice → c.mp4" in m.text, what="the status message")

    carol = await fake.slash("swap", user=family.carol, channel=family.general, clip=fake.upload("c.mp4", clip), identity="Alice")
    assert f"<@{family.alice.id}>" in await answer(fake, carol), "a grant is for one member"

    unshare = await fake.slash("unshare", user=family.alice, channel=family.general, identity=str(alice_id.id), who=family.bob)
    assert "1 queued job using it was cancelled" in await answer(fake, unshare)
    [job] = await store.list_jobs(family.guild.id)
    assert job.status is JobStatus.CANCELLED
    await fake.wait_for(lambda: "Cancelled" in status.text, what="bob's status message to say cancelled")


async def test_share_with_everyone_but_not_with_a_role(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage
) -> None:
    identity = await ready_identity(store, family.guild, family.alice, "Alice")
    cousins = await fake.add_role(family.guild, "cousins")
    role = await fake.slash("share", user=family.alice, channel=family.general, identity=str(identity.id), who=cousins)
    assert "not with a role" in await answer(fake, role)
    everyone = await fake.slash("share", user=family.alice, channel=family.general, identity=str(identity.id), who=family.guild.everyone)
    assert "everyone on this server" in await answer(fake, everyone)
    await store.check_can_use(family.guild.id, identity.id, family.carol.id)


async def test_only_the_owner_shares(fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage) -> None:
    identity = await ready_identity(store, family.guild, family.alice, "Alice")
    assert await fake.autocomplete("share", "identity", user=family.bob, channel=family.general) == []
    ia = await fake.slash("share", user=family.bob, channel=family.general, identity=str(identity.id), who=family.bob)
    assert f"<@{family.alice.id}>" in await answer(fake, ia)
    assert await store.list_grants(family.guild.id, identity.id) == []


async def test_the_subject_can_claim_and_erase_what_someone_else_enrolled(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage
) -> None:
    bobs = await ready_identity(store, family.guild, family.alice, "Bob", on_behalf=True,
                                subject_user_id=family.bob.id, consent_confirmed_by=family.alice.id)
    await store.share_identity(family.guild.id, bobs.id, family.alice.id, family.carol.id)
    choices = await fake.autocomplete("forget", "identity", user=family.bob, channel=family.general)
    assert choices == [{"name": "Bob · you, enrolled by someone else", "value": str(bobs.id)}]

    claim = await fake.slash("claim", user=family.bob, channel=family.general, identity=str(bobs.id))
    assert "is yours now" in await answer(fake, claim)
    claimed = await store.get_identity(family.guild.id, bobs.id)
    assert claimed.owner_id == family.bob.id and await store.list_grants(family.guild.id, bobs.id) == []

    forget = await fake.slash("forget", user=family.bob, channel=family.general, identity=str(bobs.id))
    await fake.wait_for(lambda: forget.original is not None and forget.original.buttons, what="the are-you-sure")
    await fake.click(forget.original, user=family.bob, label="Erase it")
    await fake.wait_for(lambda: "Erased: 1 identity" in forget.reply_text, what="the erase report")
    with pytest.raises(NotFound):
        await store.get_identity(family.guild.id, bobs.id)


async def test_forget_asks_first_and_everything_erases_all_of_me(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage
) -> None:
    mine = await ready_identity(store, family.guild, family.carol, "Carol")
    await ready_identity(store, family.guild, family.carol, "Nana", on_behalf=True, consent_confirmed_by=family.carol.id)
    keep = await fake.slash("forget", user=family.carol, channel=family.general, identity=str(mine.id))
    await fake.wait_for(lambda: keep.original is not None and keep.original.buttons, what="the are-you-sure")
    await fake.click(keep.original, user=family.carol, label="Cancel")
    await fake.wait_for(lambda: "nothing was erased" in keep.reply_text, what="the cancel")
    assert len(await store.list_identities(family.guild.id, family.carol.id)) == 2

    everything = await fake.slash("forget", user=family.carol, channel=family.general, everything=True)
    await fake.wait_for(lambda: everything.original is not None and everything.original.buttons, what="the are-you-sure")
    await fake.click(everything.original, user=family.carol, label="Erase it")
    await fake.wait_for(lambda: "Erased: 2 identities" in everything.reply_text, what="the erase report")
    assert await store.list_identities(family.guild.id, family.carol.id) == []


async def test_identities_lists_mine_and_shared_with_thumbnails(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage
) -> None:
    await ready_identity(store, family.guild, family.bob, "Bob")
    alice = await ready_identity(store, family.guild, family.alice, "Alice")
    await store.share_identity(family.guild.id, alice.id, family.alice.id, family.bob.id)
    ia = await fake.slash("identities", user=family.bob, channel=family.general)
    await fake.wait_for(lambda: ia.replies, what="the list")
    [reply] = ia.replies
    assert reply.ephemeral and len(reply.data["embeds"]) == 2
    assert "Bob" in reply.text and "Alice · shared with you" in reply.text and "3 faces · ready" in reply.text
    assert sorted(reply.filenames) == sorted(f"faces-{i}.png" for i in (alice.id, alice.id - 1))


# --- admins -------------------------------------------------------------------------------------------------------


async def test_admin_restricts_channels_and_roles(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, photos: Path
) -> None:
    denied = await fake.slash("famswap settings", user=family.bob, channel=family.general, allow_channel=family.movies)
    assert "Only server admins" in await answer(fake, denied)

    ia = await fake.slash("famswap settings", user=family.alice, channel=family.general, allow_channel=family.movies)
    assert f"<#{family.movies.id}>" in await answer(fake, ia)
    photo = (photos / "obama.jpg").read_bytes()
    elsewhere = await fake.slash("enroll", user=family.bob, channel=family.general, photo=fake.upload("me.jpg", photo))
    assert f"only used in <#{family.movies.id}>" in await answer(fake, elsewhere)
    there = await fake.slash("enroll", user=family.bob, channel=family.movies, photo=fake.upload("me.jpg", photo))
    await fake.wait_for(lambda: "Got 1 new file" in there.reply_text, what="enroll in the allowed channel")

    helpers = await fake.add_role(family.guild, "helpers")
    fake.add_member(family.guild, family.carol, roles=[helpers])
    ia = await fake.slash("famswap settings", user=family.alice, channel=family.general, allow_role=helpers)
    await answer(fake, ia)
    bob = await fake.slash("enroll", user=family.bob, channel=family.movies, photo=fake.upload("me2.jpg", photo))
    assert f"<@&{helpers.id}>" in await answer(fake, bob)
    carol = await fake.slash("enroll", user=family.carol, channel=family.movies, photo=fake.upload("c.jpg", photo))
    await fake.wait_for(lambda: "Got 1 new file" in carol.reply_text, what="carol, who has the role")

    ia = await fake.slash("famswap settings", user=family.alice, channel=family.general, clear_restrictions=True)
    assert "every channel" in await answer(fake, ia)


async def test_admin_purge_erases_the_server(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage
) -> None:
    await ready_identity(store, family.guild, family.bob, "Bob")
    await ready_identity(store, family.guild, family.carol, "Carol")
    ia = await fake.slash("famswap purge", user=family.alice, channel=family.general)
    await fake.wait_for(lambda: ia.original is not None and ia.original.buttons, what="the are-you-sure")
    await fake.click(ia.original, user=family.alice, label="Erase everything")
    await fake.wait_for(lambda: "erased 2 identities" in ia.reply_text, what="the purge report")
    for user in (family.bob, family.carol):
        assert await store.list_identities(family.guild.id, user.id) == []


async def test_leaving_a_server_schedules_its_deletion(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage
) -> None:
    await store.ensure_guild(family.guild.id, family.guild.name)
    await fake.remove_bot_from(family.guild)
    for _ in range(100):
        if (await store.get_guild(family.guild.id)).deletion_due_at is not None:
            break
        await asyncio.sleep(0.05)
    assert (await store.get_guild(family.guild.id)).deletion_due_at is not None
    await fake.add_bot_to(family.guild)
    for _ in range(100):
        if (await store.get_guild(family.guild.id)).deletion_due_at is None:
            break
        await asyncio.sleep(0.05)
    assert (await store.get_guild(family.guild.id)).deletion_due_at is None
