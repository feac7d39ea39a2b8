"""Who may use which face: /identities, /share, /unshare, /claim and /forget (consent lives in storage's rules)."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks
from bot.options import MyIdentity, OwnedIdentity, identity_label
from bot.views.confirm import Confirm
from common.errors import NotAllowed
from storage import Bank, ForgetReport, Identity, IdentityStatus, Warmth

if TYPE_CHECKING:
    from bot.app import FamswapBot

log = logging.getLogger(__name__)

MAX_EMBEDS = 10  # Discord's limit per message


def _who(target: discord.Member | discord.Role) -> tuple[int | None, str]:
    """A share target as storage wants it (None: everyone) and as a user reads it."""
    if isinstance(target, discord.Role):
        if not target.is_default():
            raise NotAllowed(
                "Identities are shared with one member or with @everyone, not with a role.",
                hint="Pick a member, or @everyone.",
            )
        return None, "everyone on this server"
    return target.id, target.mention


def _forget_summary(report: ForgetReport) -> str:
    parts = [
        f"{report.identities} identit{'y' if report.identities == 1 else 'ies'}",
        f"{report.uploads} photo/video upload{'s' if report.uploads != 1 else ''}",
        f"{report.jobs} job{'s' if report.jobs != 1 else ''}",
        f"{report.results} result{'s' if report.results != 1 else ''}",
        f"{report.files} stored file{'s' if report.files != 1 else ''}",
    ]
    return ", ".join(parts)


class Identities(commands.Cog):
    def __init__(self, bot: FamswapBot) -> None:
        self.bot = bot

    @app_commands.command(name="identities")
    @app_commands.guild_only()
    async def identities(self, interaction: discord.Interaction[FamswapBot]) -> None:
        """The faces you can use here: yours and those shared with you."""
        assert interaction.guild_id is not None
        await interaction.response.defer(ephemeral=True, thinking=True)
        store = self.bot.store
        found = await store.list_identities(interaction.guild_id, interaction.user.id)
        if not found:
            await interaction.followup.send("No faces yet. Start with /enroll and a few photos of yourself.")
            return
        bank = await store.get_bank(interaction.guild_id)
        warmth = await store.warmth(interaction.guild_id)
        embeds: list[discord.Embed] = []
        files: list[discord.File] = []
        for identity in found[:MAX_EMBEDS]:
            embed = discord.Embed(title=identity_label(identity, interaction.user.id), description=await self._describe(identity, bank, warmth.get(identity.id)))
            if identity.thumbnail is not None:
                filename = f"faces-{identity.id}.png"
                files.append(discord.File(io.BytesIO(await store.read_blob(identity.thumbnail)), filename=filename))
                embed.set_thumbnail(url=f"attachment://{filename}")
            embeds.append(embed)
        more = len(found) - MAX_EMBEDS
        content = f"…and {more} more: " + ", ".join(i.display_name for i in found[MAX_EMBEDS:]) if more > 0 else None
        await interaction.followup.send(content, embeds=embeds, files=files)

    async def _describe(self, identity: Identity, bank: Bank | None, warmth: Warmth | None) -> str:
        lines = []
        if identity.on_behalf:
            confirmed = identity.consent_confirmed_at.strftime("%Y-%m-%d") if identity.consent_confirmed_at else "?"
            lines.append(f"Enrolled by <@{identity.owner_id}> on their behalf (consent confirmed {confirmed})")
        else:
            lines.append(f"Belongs to <@{identity.owner_id}>")
        state = {IdentityStatus.READY: "ready", IdentityStatus.PREPARING: "building the face set",
                 IdentityStatus.EMPTY: "no usable face yet"}[identity.status]
        lines.append(f"{identity.face_count} face{'s' if identity.face_count != 1 else ''} · {state}")
        trained = bank.decoder_versions.get(identity.id) if bank is not None else None
        if trained is None:
            lines.append("Not trained yet (the first swap trains it)")
        elif trained < identity.faceset_version:
            lines.append("Trained on older photos (the next swap updates it)")
        else:
            lines.append("Trained")
        if warmth is not None and trained is not None:
            # How warm the face bank is for them: a warm person's swap trains a shorter time.
            lines.append(f"Face bank: {warmth.text()}")
        grants = await self.bot.store.list_grants(identity.guild_id, identity.id)
        if grants:
            shared = ", ".join("everyone" if g.user_id is None else f"<@{g.user_id}>" for g in grants)
            lines.append(f"Shared with {shared}")
        return "\n".join(lines)

    @app_commands.command(name="share")
    @app_commands.guild_only()
    @checks.allowed_here()
    async def share(
        self, interaction: discord.Interaction[FamswapBot], identity: OwnedIdentity, who: discord.Member | discord.Role
    ) -> None:
        """Let a member (or @everyone here) swap with one of your identities.

        Parameters
        ----------
        identity
            One of your identities
        who
            A member, or @everyone
        """
        assert interaction.guild_id is not None
        user_id, label = _who(who)
        await self.bot.store.share_identity(interaction.guild_id, identity.id, interaction.user.id, user_id)
        await interaction.response.send_message(
            f"**{identity.display_name}** is now shared with {label}. /unshare takes it back.", ephemeral=True
        )

    @app_commands.command(name="unshare")
    @app_commands.guild_only()
    async def unshare(
        self, interaction: discord.Interaction[FamswapBot], identity: OwnedIdentity, who: discord.Member | discord.Role
    ) -> None:
        """Take back a share: their queued jobs with this identity are cancelled.

        Parameters
        ----------
        identity
            One of your identities
        who
            The member (or @everyone) to take it back from
        """
        assert interaction.guild_id is not None
        user_id, label = _who(who)
        stopped = await self.bot.store.unshare_identity(interaction.guild_id, identity.id, interaction.user.id, user_id)
        extra = f" {stopped} queued job{'s' if stopped != 1 else ''} using it {'were' if stopped != 1 else 'was'} cancelled." if stopped else ""
        await interaction.response.send_message(
            f"**{identity.display_name}** is no longer shared with {label}.{extra}", ephemeral=True
        )

    @app_commands.command(name="claim")
    @app_commands.guild_only()
    async def claim(self, interaction: discord.Interaction[FamswapBot], identity: MyIdentity) -> None:
        """Take over an identity of your face that someone enrolled for you: you decide who uses it, or /forget it.

        Parameters
        ----------
        identity
            The identity of you that someone else enrolled
        """
        assert interaction.guild_id is not None
        claimed = await self.bot.store.claim_identity(interaction.guild_id, identity.id, interaction.user.id)
        await interaction.response.send_message(
            f"**{claimed.display_name}** is yours now: every share was revoked. Use /share to allow others, or /forget to erase it.",
            ephemeral=True,
        )

    @app_commands.command(name="forget")
    @app_commands.guild_only()
    async def forget(
        self, interaction: discord.Interaction[FamswapBot], identity: MyIdentity | None = None, everything: bool = False
    ) -> None:
        """Erase a face for good (photos, face set, trained model, results) — or everything famswap has of you here.

        Parameters
        ----------
        identity
            An identity you own, or one of you that someone else enrolled
        everything
            Erase everything about you on this server instead
        """
        assert interaction.guild_id is not None
        if identity is None and not everything:
            raise NotAllowed("Name the identity to forget, or set everything to True.", hint="e.g. /forget identity:Grandma")
        what = "**everything famswap has of you on this server**" if everything else f"**{identity.display_name}**"  # type: ignore[union-attr]
        view = Confirm(interaction.user.id, confirm_label="Erase it", danger=True, timeout=120.0)
        await interaction.response.send_message(
            f"Erase {what}? Photos, face sets, trained models and results go, and this cannot be undone.",
            view=view, ephemeral=True,
        )
        await view.wait()
        if not view.value:
            await interaction.edit_original_response(content="Okay — nothing was erased.", view=None)
            return
        store = self.bot.store
        if everything:
            report = await store.forget_user(interaction.user.id, guild_id=interaction.guild_id)
        else:
            assert identity is not None
            report = await store.forget_identity(
                interaction.guild_id, identity.id, interaction.user.id, is_admin=checks.is_admin(interaction)
            )
        await interaction.edit_original_response(content=f"Erased: {_forget_summary(report)}.", view=None)


async def setup(bot: FamswapBot) -> None:
    await bot.add_cog(Identities(bot))
