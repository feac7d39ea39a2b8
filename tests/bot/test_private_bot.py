"""A private bot: it serves only FAMSWAP_ALLOWED_GUILDS, leaves any other server, and reconciles servers at start-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.config import Settings
from storage import Storage
from tests.bot.conftest import BotRunner, Family, ready_identity
from tests.bot.fake_discord import FakeDiscord


@pytest.fixture
def settings(fake: FakeDiscord, family: Family, home: Path, tmp_path: Path) -> Settings:
    environ = {
        **fake.environ(),
        "FAMSWAP_HOME": str(home),
        "FAMSWAP_KEY_FILE": str(tmp_path / "famswap.key"),
        "FAMSWAP_ALLOWED_GUILDS": str(family.guild.id),
    }
    return Settings.load(environ, env_file=tmp_path / "no.env")


async def test_a_server_that_is_not_allowed_is_left_with_a_word_to_its_owner(
    fake: FakeDiscord, runner: BotRunner, family: Family
) -> None:
    dave = fake.add_user("dave")
    strangers = fake.add_guild("Strangers", dave)
    fake.guilds.pop(strangers.id)  # not yet joined: the bot is invited now
    await fake.add_bot_to(strangers)
    await fake.wait_for(lambda: strangers.id in fake.left, what="the bot to leave")
    [dm] = fake.dms_to(dave)
    assert "Strangers" in dm.text and "only serves the servers its host chose" in dm.text
    assert family.guild.id in fake.guilds and family.guild.id not in fake.left


async def test_servers_are_reconciled_at_start_up(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage
) -> None:
    await runner.stop()
    # While the bot was offline: a server it is no longer in (removed then), one that was not allowed joined it,
    # and one it was removed from earlier but is in again.
    gone = 4242
    await store.ensure_guild(gone, "Old friends")
    other = fake.add_guild("Not allowed", fake.add_user("erin"))
    await ready_identity(store, family.guild, family.alice)
    await store.schedule_guild_deletion(family.guild.id)

    await runner.start()
    await fake.wait_for(lambda: other.id in fake.left, what="the bot to leave the server not allowed")
    for _ in range(200):  # the storage side follows the leave; poll it (up to 10 s)
        if (await store.get_guild(gone)).deletion_due_at is not None:
            break
        await asyncio.sleep(0.05)
    assert (await store.get_guild(gone)).deletion_due_at is not None, "erased after the grace period"
    assert (await store.get_guild(family.guild.id)).deletion_due_at is None, "the bot is back there"
    assert await store.list_identities(family.guild.id, family.alice.id)
