"""Answering an interaction whatever state it is in, and the friendly words for errors users can cause."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from common.errors import FamswapError

log = logging.getLogger(__name__)

OOPS = "Something went wrong on my side. The server admin can find the details in famswap's log."


def friendly_text(error: BaseException) -> str | None:
    """What to tell the user about ``error``, or None when it is a bug (logged, and answered with ``OOPS``)."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, app_commands.TransformerError) and isinstance(error.__cause__, FamswapError):
        error = error.__cause__
    if isinstance(error, FamswapError):
        return error.user_text()
    if isinstance(error, app_commands.CheckFailure):
        return str(error) or "You can't use that here."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down a little — try again in {error.retry_after:.0f} s."
    if isinstance(error, discord.Forbidden):
        return "I'm not allowed to post here. Ask an admin to let me send messages and attach files in this channel."
    if isinstance(error, discord.RateLimited) or (isinstance(error, discord.HTTPException) and error.status == 429):
        return "Discord asked me to slow down. Try again in a minute."
    return None


async def reply(interaction: discord.Interaction, content: str | None = None, *, ephemeral: bool = True, **kwargs: Any) -> None:
    """Send ``content`` as the response, or as a follow-up when the interaction was already answered or deferred."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(content, ephemeral=ephemeral, **kwargs)
        else:
            await interaction.response.send_message(content, ephemeral=ephemeral, **kwargs)
    except discord.HTTPException as exc:
        # The token may have expired (15 min) or the channel gone; nothing else can reach this user now.
        log.warning("could not answer interaction %s: %s", interaction.id, exc)


async def reply_error(interaction: discord.Interaction, error: BaseException) -> None:
    """The one place an error becomes words: friendly text for expected errors, a log entry and ``OOPS`` for bugs."""
    text = friendly_text(error)
    if text is None:
        original = getattr(error, "original", error)
        log.error("unexpected error in interaction %s", interaction.id, exc_info=original)
        text = OOPS
    await reply(interaction, f"⚠️ {text}", ephemeral=True)
