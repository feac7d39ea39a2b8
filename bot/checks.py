"""App-command checks: where famswap may be used (admin-chosen channels and roles) and who counts as an admin."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import discord
from discord import app_commands

from common.errors import NotFound

if TYPE_CHECKING:
    from bot.app import FamswapBot

T = TypeVar("T")


class Refused(app_commands.CheckFailure):
    """A check said no; ``str(err)`` is the friendly reason the error handler shows (ephemeral)."""


def is_admin(interaction: discord.Interaction) -> bool:
    """Guild admins are members with Manage Server (the permission Discord shows for bot settings)."""
    return interaction.guild is not None and interaction.permissions.manage_guild


def _channel_ids(interaction: discord.Interaction) -> set[int]:
    # A thread counts as its parent channel: allowing #movies allows the threads under it.
    ids = {interaction.channel_id} if interaction.channel_id else set()
    parent = getattr(interaction.channel, "parent_id", None)
    if parent:
        ids.add(parent)
    return ids


async def ensure_allowed_here(interaction: discord.Interaction[FamswapBot]) -> None:
    """Raise ``Refused`` when the guild's admins restricted famswap to other channels or roles."""
    if interaction.guild_id is None:
        raise Refused("famswap works inside a server, not in direct messages.")
    if is_admin(interaction):
        return
    try:
        settings = (await interaction.client.store.get_guild(interaction.guild_id)).settings
    except NotFound:  # no row yet: nobody restricted anything
        return
    if settings.allowed_channel_ids and not (_channel_ids(interaction) & set(settings.allowed_channel_ids)):
        where = ", ".join(f"<#{c}>" for c in settings.allowed_channel_ids)
        raise Refused(f"famswap is only used in {where} on this server. Try there!")
    if settings.allowed_role_ids:
        roles = {r.id for r in getattr(interaction.user, "roles", [])}
        if not roles & set(settings.allowed_role_ids):
            names = ", ".join(f"<@&{r}>" for r in settings.allowed_role_ids)
            raise Refused(f"famswap is limited to members with {names} here. Ask a server admin if you'd like in.")


def allowed_here() -> Callable[[T], T]:
    """Decorator form of ``ensure_allowed_here`` for commands that make or use faces."""

    async def predicate(interaction: discord.Interaction[FamswapBot]) -> bool:
        await ensure_allowed_here(interaction)
        return True

    return app_commands.check(predicate)


def admin_only() -> Callable[[T], T]:
    """Only members with Manage Server. Discord hides the command from others too (default permissions), but
    server owners can override that, so the bot checks again."""

    async def predicate(interaction: discord.Interaction[FamswapBot]) -> bool:
        if not is_admin(interaction):
            raise Refused("Only server admins (members with Manage Server) can do that.")
        return True

    return app_commands.check(predicate)
