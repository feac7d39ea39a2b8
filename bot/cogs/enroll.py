"""/enroll and "Enroll faces from this message": photos or a selfie video in, a queued face-set job out.

Attachments are downloaded and checked right away (slash-command uploads are ephemeral and their links expire) and
nothing is stored until every file passed. When the worker finds that new photos do not look like the person enrolled
before, it asks (``bot.results``); the answer's buttons land in ``answer_new_person``. Enrolling someone else asks the enroller to confirm they have that
person's permission; without the click nothing is stored at all. Photos from another member's message are always
an on-behalf enrollment with that member as the subject, and the member is told (DM, else a note in the channel)
how to remove it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks
from bot.progress import announce_job
from bot.uploads import Media, download
from bot.views.confirm import Confirm
from bot.views.enroll_form import WhoseFace
from bot.views.new_person import AddAnyway
from common.errors import NotFound, UnsupportedMedia
from storage import Identity, PrepareJob, UploadKind, UploadStatus

if TYPE_CHECKING:
    from bot.app import FamswapBot

log = logging.getLogger(__name__)

CONSENT_TIMEOUT = 600.0  # the interaction token lives 15 minutes; the question must be settled well before


class Enroll(commands.Cog):
    def __init__(self, bot: FamswapBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Enroll faces from this message", callback=self.enroll_from_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)
        self.bot.add_dynamic_items(AddAnyway)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(AddAnyway)
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="enroll")
    @app_commands.guild_only()
    @checks.allowed_here()
    async def enroll(
        self,
        interaction: discord.Interaction[FamswapBot],
        photo: discord.Attachment | None = None,
        photo2: discord.Attachment | None = None,
        photo3: discord.Attachment | None = None,
        photo4: discord.Attachment | None = None,
        video: discord.Attachment | None = None,
        name: app_commands.Range[str, 1, 40] | None = None,
        member: discord.Member | None = None,
    ) -> None:
        """Teach famswap a face: yours, or a family member's with their permission.

        Parameters
        ----------
        photo
            A clear photo of the face (several photos from different angles work best)
        photo2
            Another photo
        photo3
            Another photo
        photo4
            Another photo
        video
            A short selfie video turning the head and talking (instead of or besides photos)
        name
            Someone else's name, to enroll them on their behalf (you'll confirm you have their permission)
        member
            The person, if they are on this server (they can then claim or delete it)
        """
        attachments = [a for a in (photo, photo2, photo3, photo4, video) if a is not None]
        await self.run_enroll(interaction, attachments, name=name, member=member)

    @app_commands.guild_only()
    @checks.allowed_here()
    async def enroll_from_message(self, interaction: discord.Interaction[FamswapBot], message: discord.Message) -> None:
        if not message.attachments:
            raise UnsupportedMedia("That message has no photos or videos.", hint="Pick a message with photos attached.")
        attachments = list(message.attachments)
        # Someone else's message shows (most likely) its author: enrolling it is on their behalf, never "me".
        author = message.author if message.author.id != interaction.user.id else None

        async def submitted(modal_interaction: discord.Interaction, name: str | None) -> None:
            await self.run_enroll(modal_interaction, attachments, name=name, member=author)  # type: ignore[arg-type]

        await interaction.response.send_modal(WhoseFace(submitted))

    async def run_enroll(
        self,
        interaction: discord.Interaction[FamswapBot],
        attachments: list[discord.Attachment],
        *,
        name: str | None,
        member: discord.Member | discord.User | None,
    ) -> None:
        """The enroll flow shared by the slash command and the message menu. Answers ephemerally throughout.

        ``member`` is the person the face belongs to when they have an account here (the subject, who may claim or
        forget the identity); when it is not the user, the enrollment is on their behalf and they are told."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        if not attachments:
            raise UnsupportedMedia(
                "Attach at least one photo of the face, or a short selfie video.",
                hint="Use the photo and video options of /enroll.",
            )
        settings = self.bot.settings
        media = [
            await download(
                self.bot.downloads, a, max_bytes=settings.max_upload_bytes, max_clip_seconds=settings.max_clip_seconds,
                max_clip_fps=settings.max_clip_fps, max_clip_frames=settings.max_clip_frames,
            )
            for a in attachments
        ]
        if sum(m.kind is UploadKind.VIDEO for m in media) > 1:
            raise UnsupportedMedia("One selfie video at a time, please.", hint="Send the other video with another /enroll.")

        user = interaction.user
        assert interaction.guild_id is not None
        # Refuse before anything is stored (enqueue checks again, atomically, once the files are in).
        await self.bot.store.check_quota(interaction.guild_id, user.id)
        on_behalf = name is not None or (member is not None and member.id != user.id)
        display = (name or (member.display_name if member else None) or user.display_name).strip()[:40]
        identity = await self._existing(interaction.guild_id, user.id, display if on_behalf else None)
        created = False
        if identity is None:
            subject = member.id if member is not None else (None if on_behalf else user.id)
            if on_behalf and not await self._confirm_consent(interaction, display, member):
                return
            identity = await self.bot.store.create_identity(
                interaction.guild_id,
                user.id,
                display,
                on_behalf=on_behalf,
                subject_user_id=subject,
                consent_confirmed_by=user.id if on_behalf else None,
            )
            created = True
        try:
            await self._store_and_queue(interaction, identity, media)
        except Exception:
            if created:  # leave nothing half-made behind: an identity without its photos is useless
                await self.bot.store.forget_identity(interaction.guild_id, identity.id, user.id)
            raise
        if created and member is not None and member.id != user.id:
            await self._tell_subject(interaction, identity, member)

    async def _tell_subject(
        self, interaction: discord.Interaction[FamswapBot], identity: Identity, member: discord.abc.User
    ) -> None:
        """Tell the person whose face was enrolled by someone else: who did it and how to undo it."""
        guild = interaction.guild.name if interaction.guild is not None else "this server"
        how = (f"If that's not okay, use `/forget identity:{identity.display_name}` on that server to delete it "
               "(or `/claim` to take it over and decide who may use it).")
        text = (f"Hi! <@{identity.owner_id}> enrolled your face in famswap on **{guild}** as “{identity.display_name}”, "
                f"confirming that you agreed. {how}")
        try:
            await member.send(text, allowed_mentions=discord.AllowedMentions.none())
            return
        except discord.HTTPException:
            log.info("could not DM user %s about identity %s; telling them in the channel", member.id, identity.id)
        if interaction.channel_id is None:
            return
        channel = self.bot.get_partial_messageable(interaction.channel_id, guild_id=interaction.guild_id)
        note = (f"{member.mention}: <@{identity.owner_id}> enrolled your face as “{identity.display_name}”, "
                f"saying you agreed. {how}")
        try:
            await channel.send(note, allowed_mentions=discord.AllowedMentions(users=[member], replied_user=False))
        except discord.HTTPException:
            log.warning("could not tell user %s that identity %s was enrolled", member.id, identity.id)

    async def _existing(self, guild_id: int, user_id: int, on_behalf_name: str | None) -> Identity | None:
        """The identity new photos add to: the user's own one, or their on-behalf one of that name."""
        for identity in await self.bot.store.list_identities(guild_id, user_id):
            if identity.owner_id != user_id:
                continue
            if on_behalf_name is None and not identity.on_behalf:
                return identity
            if on_behalf_name is not None and identity.on_behalf and identity.display_name.casefold() == on_behalf_name.casefold():
                return identity
        return None

    async def _confirm_consent(
        self, interaction: discord.Interaction[FamswapBot], display: str, member: discord.Member | discord.User | None
    ) -> bool:
        view = Confirm(interaction.user.id, confirm_label=f"Yes, {display} agreed", timeout=CONSENT_TIMEOUT)
        claim = (f" {member.mention} will be told, and will be able to claim or delete it."
                 if member is not None else "")
        text = (
            f"You're enrolling **{display}** on their behalf. A face is personal data: only go on if {display} "
            f"knows and agrees to appear in famswap clips on this server. I'll record that you confirmed.{claim}\n"
            "Nothing is saved until you press the button."
        )
        await interaction.edit_original_response(content=text, view=view)
        await view.wait()
        if not view.value:
            await interaction.edit_original_response(content="Okay — nothing was saved.", view=None)
            return False
        return True

    async def _store_and_queue(
        self, interaction: discord.Interaction[FamswapBot], identity: Identity, media: list[Media]
    ) -> None:
        store = self.bot.store
        guild_id, user_id = identity.guild_id, interaction.user.id
        added = 0
        for item in media:
            _, is_new = await store.add_upload(
                guild_id, identity.id, user_id, item.data, kind=item.kind, filename=item.filename
            )
            added += is_new
        if not added:
            await interaction.edit_original_response(
                content=f"I already have {'this file' if len(media) == 1 else 'these files'} for **{identity.display_name}**.",
                view=None,
            )
            return
        job = await store.enqueue(
            guild_id,
            user_id,
            PrepareJob(identity_id=identity.id, identity_name=identity.display_name,
                       title=f"Enrolling {identity.display_name}"),
            identity_ids=[identity.id],
        )
        status = await announce_job(interaction, job)
        files = f"{added} new file{'s' if added != 1 else ''}"
        await interaction.edit_original_response(
            content=f"Got {files} for **{identity.display_name}** — building the face set. "
            f"I'll post it here: {status.jump_url}",
            view=None,
        )


    async def answer_new_person(self, interaction: discord.Interaction[FamswapBot], job_id: int, add: bool) -> None:
        """"Add anyway" / "Leave them out" under an enrollment whose new files showed someone else: enroll again with
        them added, or mark them left out. Only the person who sent them may answer, once."""
        assert interaction.guild_id is not None
        store = self.bot.store
        job = await store.get_job(job_id, guild_id=interaction.guild_id)
        if interaction.user.id != job.owner_id:
            await interaction.response.send_message(f"Only <@{job.owner_id}> can answer — they sent these files.",
                                                    ephemeral=True)
            return
        if not isinstance(job.payload, PrepareJob) or len(job.identity_ids) != 1:
            raise NotFound(f"Job #{job.id} is not an enrollment.", hint="Send the photos again with /enroll.")
        asked = set((await store.get_result(interaction.guild_id, job.id, job.owner_id)).report.get("uploads") or [])
        identity = await store.get_identity(interaction.guild_id, job.identity_ids[0])
        waiting = [u for u in await store.list_uploads(interaction.guild_id, identity.id, status=UploadStatus.PENDING)
                   if u.id in asked]
        question = interaction.message
        if not waiting:
            await interaction.response.send_message("That was already answered.", ephemeral=True)
        else:
            await interaction.response.defer(ephemeral=True, thinking=True)
            files = ", ".join(u.filename for u in waiting)
            if add:
                again = PrepareJob(identity_id=identity.id, identity_name=identity.display_name, add_anyway=True,
                                   title=f"Enrolling {identity.display_name}")
                new = await store.enqueue(interaction.guild_id, interaction.user.id, again, identity_ids=[identity.id])
                status = await announce_job(interaction, new, request_message_id=question.id if question else None)
                answer, said = f"Adding {files} to **{identity.display_name}**: {status.jump_url}", "→ Adding them."
            else:
                for u in waiting:
                    await store.record_upload_outcome(
                        u.id, UploadStatus.REJECTED,
                        reason=f"left out: does not look like {identity.display_name} as enrolled before",
                    )  # fmt: skip
                answer = f"Okay — {files} left out; **{identity.display_name}** is unchanged."
                said = "→ Left out."
            await interaction.edit_original_response(content=answer)
            if question is not None:
                try:  # one answer per question: the buttons go
                    await question.edit(content=f"{question.content}\n{said}", view=None)
                except discord.HTTPException as exc:
                    log.info("could not remove the buttons of message %s: %s", question.id, exc)


async def setup(bot: FamswapBot) -> None:
    await bot.add_cog(Enroll(bot))
