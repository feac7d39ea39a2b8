"""Server admins: /famswap settings (channels, roles, quotas) and /famswap purge; the bot leaving or rejoining a
server schedules or cancels the deletion of that server's data."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks
from bot.views.confirm import Confirm
from common.errors import NotFound
from storage import GuildSettings

if TYPE_CHECKING:
    from bot.app import FamswapBot

log = logging.getLogger(__name__)


def describe_settings(settings: GuildSettings) -> str:
    channels = ", ".join(f"<#{c}>" for c in settings.allowed_channel_ids) or "every channel"
    roles = ", ".join(f"<@&{r}>" for r in settings.allowed_role_ids) or "every member"

    def quota(value: int | None) -> str:
        return "host default" if value is None else str(value)

    return "\n".join([
        f"**Channels:** {channels}",
        f"**Who:** {roles}",
        f"**Queued jobs per member:** {quota(settings.max_queued_per_user)}",
        f"**Jobs per member per day:** {quota(settings.daily_jobs_per_user)}",
        f"**Jobs per server per day:** {quota(settings.daily_jobs_per_guild)}",
        f"**Results visible to:** {'the whole server' if settings.result_visibility.value == 'guild' else 'their requester'}",
        f"**Label:** “{settings.label_text}” ({settings.label_position}) — always on",
    ])


class Admin(commands.Cog):
    famswap = app_commands.Group(
        name="famswap",
        description="Server settings for famswap (admins)",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot: FamswapBot) -> None:
        self.bot = bot

    @famswap.command(name="settings")
    @checks.admin_only()
    async def settings(
        self,
        interaction: discord.Interaction[FamswapBot],
        allow_channel: discord.TextChannel | None = None,
        allow_role: discord.Role | None = None,
        clear_restrictions: bool = False,
        jobs_per_member_per_day: app_commands.Range[int, 1, 1000] | None = None,
        queued_per_member: app_commands.Range[int, 1, 100] | None = None,
        results_visible_to: Literal["server", "requester"] | None = None,
    ) -> None:
        """Show or change where and how much famswap may be used here.

        Parameters
        ----------
        allow_channel
            Limit famswap to this channel (add several one by one)
        allow_role
            Limit famswap to members with this role (add several one by one)
        clear_restrictions
            Allow every channel and every member again
        jobs_per_member_per_day
            Most jobs one member may start in 24 hours
        queued_per_member
            Most jobs one member may have waiting at once
        results_visible_to
            Who may fetch results again later
        """
        assert interaction.guild_id is not None
        store = self.bot.store
        current = (await store.get_guild(interaction.guild_id)).settings
        changes: dict[str, Any] = {}
        channels = () if clear_restrictions else current.allowed_channel_ids
        roles = () if clear_restrictions else current.allowed_role_ids
        if allow_channel is not None and allow_channel.id not in channels:
            channels = (*channels, allow_channel.id)
        if allow_role is not None and allow_role.id not in roles:
            roles = (*roles, allow_role.id)
        if channels != current.allowed_channel_ids:
            changes["allowed_channel_ids"] = channels
        if roles != current.allowed_role_ids:
            changes["allowed_role_ids"] = roles
        if jobs_per_member_per_day is not None:
            changes["daily_jobs_per_user"] = jobs_per_member_per_day
        if queued_per_member is not None:
            changes["max_queued_per_user"] = queued_per_member
        if results_visible_to is not None:
            changes["result_visibility"] = "guild" if results_visible_to == "server" else "owner"
        updated = await store.update_guild_settings(interaction.guild_id, **changes) if changes else current
        head = "Updated." if changes else "famswap on this server:"
        await interaction.response.send_message(f"{head}\n{describe_settings(updated)}", ephemeral=True)

    @famswap.command(name="purge")
    @checks.admin_only()
    async def purge(self, interaction: discord.Interaction[FamswapBot]) -> None:
        """Erase everything famswap stored for this server: every face, upload, model and result."""
        assert interaction.guild_id is not None
        view = Confirm(interaction.user.id, confirm_label="Erase everything", danger=True, timeout=120.0)
        await interaction.response.send_message(
            "Erase **all** famswap data of this server — every member's faces, photos, trained models and results? "
            "This cannot be undone.",
            view=view,
            ephemeral=True,
        )
        await view.wait()
        if not view.value:
            await interaction.edit_original_response(content="Okay — nothing was erased.", view=None)
            return
        report = await self.bot.store.forget_guild(interaction.guild_id)
        log.info("guild %s purged by %s: %s", interaction.guild_id, interaction.user.id, report)
        await interaction.edit_original_response(
            content=f"Done: erased {report.identities} identities, {report.uploads} uploads, {report.jobs} jobs, "
            f"{report.results} results and {report.files} stored files.",
            view=None,
        )

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        """Removed from a server: its data is erased after the grace period unless the bot comes back."""
        try:
            due = await self.bot.store.schedule_guild_deletion(guild.id)
            log.info("left %s (%s): its data will be erased at %s", guild.name, guild.id, due.deletion_due_at)
        except NotFound:
            pass

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        if not self.bot.guild_allowed(guild.id):
            await self.bot.leave_unserved(guild)
            return
        try:
            await self.bot.store.cancel_guild_deletion(guild.id)
        except NotFound:
            pass


async def setup(bot: FamswapBot) -> None:
    await bot.add_cog(Admin(bot))
