"""The "Show me" button under a private result's note: shows the result to its requester alone, even after a restart."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bot.replies import reply_error

if TYPE_CHECKING:
    from bot.app import FamswapBot


class ShowResult(discord.ui.DynamicItem[discord.ui.Button], template=r"famswap:result:(?P<job>\d+)"):
    """"Show me" for job J: answers its requester with the result, ephemerally; anyone else is told it is private."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(label="Show me", style=discord.ButtonStyle.primary, custom_id=f"famswap:result:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> ShowResult:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[FamswapBot]) -> Any:  # type: ignore[override]
        from bot.results import Attachment, discord_files, post_outcome  # bot.results imports this module

        try:
            update = await interaction.client.store.job_update(self.job_id)
            if update is None or update.job.guild_id != interaction.guild_id:
                await interaction.response.send_message("That result is no longer stored.", ephemeral=True)
                return
            if interaction.user.id != update.job.owner_id:
                await interaction.response.send_message(
                    f"This result is only for <@{update.job.owner_id}>, who asked for it.", ephemeral=True
                )
                return
            await interaction.response.defer(ephemeral=True, thinking=True)

            async def deliver(text: str, files: list[Attachment], view: discord.ui.View | None) -> discord.Message:
                return await interaction.followup.send(text[:2000], files=discord_files(files), ephemeral=True,
                                                       wait=True, allowed_mentions=discord.AllowedMentions.none())

            channel = interaction.client.get_partial_messageable(update.post.channel_id, guild_id=update.job.guild_id)
            await post_outcome(interaction.client, channel, update, deliver=deliver)
        except Exception as exc:
            await reply_error(interaction, exc)


def show_result_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ShowResult(job_id))
    return view
