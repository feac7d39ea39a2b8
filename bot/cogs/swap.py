"""/swap, "Swap me into this clip", /status and /cancel; runs the progress poller that reports jobs back to Discord."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks
from bot.options import UsableIdentity
from bot.progress import ProgressPoller, announce_job, format_duration, job_title, progress_bar, stage_name
from bot.results import filesize_limit
from bot.uploads import Media, download
from bot.views.pick_face import PickFace
from bot.views.show_result import ShowResult
from common.errors import NotAllowed, NotFound, UnsupportedMedia
from storage import Identity, IdentityStatus, Job, JobStatus, SwapJob, UploadKind

if TYPE_CHECKING:
    from bot.app import FamswapBot

log = logging.getLogger(__name__)


class Swap(commands.Cog):
    def __init__(self, bot: FamswapBot) -> None:
        self.bot = bot
        self.poller = ProgressPoller(bot)
        self.menu = app_commands.ContextMenu(name="Swap me into this clip", callback=self.swap_into_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)
        self.bot.add_dynamic_items(PickFace, ShowResult)
        self.poller.start()

    async def cog_unload(self) -> None:
        await self.poller.stop()
        self.bot.remove_dynamic_items(PickFace, ShowResult)
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    # ------------------------------------------------------------------------------------------ starting swaps

    @app_commands.command(name="swap")
    @app_commands.guild_only()
    @checks.allowed_here()
    async def swap(
        self,
        interaction: discord.Interaction[FamswapBot],
        clip: discord.Attachment,
        identity: UsableIdentity,
        face: app_commands.Range[int, 1, 25] | None = None,
        quality: Literal["preview", "best"] | None = None,
        identity2: UsableIdentity | None = None,
        face2: app_commands.Range[int, 1, 25] | None = None,
    ) -> None:
        """Put an enrolled person (or two) into a video clip.

        Parameters
        ----------
        clip
            The movie clip (MP4, MOV or WebM, a few seconds long)
        identity
            Whose face goes in
        face
            Which face of the clip to replace, when it has several (numbered on the contact sheet)
        quality
            preview is quick; best trains longer
        identity2
            A second person to put in the same clip, in place of another face
        face2
            Which face the second person replaces (numbered on the contact sheet)
        """
        if face2 is not None and identity2 is None:
            raise NotAllowed("face2 is the second person's face.", hint="Pick identity2 too, or leave face2 out.")
        if face is not None and face == face2:
            raise NotAllowed(f"Face {face} can't become two people.", hint="Give each person their own face.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        media = await self._download_clip(clip)
        also = [(identity2, None if face2 is None else face2 - 1)] if identity2 is not None else []
        await self.start_swap(interaction, media.data, media.filename, identity, face=face, quality=quality, also=also)

    @app_commands.guild_only()
    @checks.allowed_here()
    async def swap_into_message(self, interaction: discord.Interaction[FamswapBot], message: discord.Message) -> None:
        videos = [a for a in message.attachments if (a.content_type or "").startswith("video/")] or list(message.attachments)
        if not videos:
            raise UnsupportedMedia("That message has no video clip.", hint="Use it on a message with a video attached.")
        assert interaction.guild_id is not None
        identity = await self._own_identity(interaction.guild_id, interaction.user.id)
        await interaction.response.defer(ephemeral=True, thinking=True)
        media = await self._download_clip(videos[0])
        await self.start_swap(interaction, media.data, media.filename, identity, request_message_id=message.id)

    async def _download_clip(self, attachment: discord.Attachment) -> Media:
        settings = self.bot.settings
        return await download(
            self.bot.downloads,
            attachment,
            max_bytes=settings.max_upload_bytes,
            kinds=(UploadKind.VIDEO,),
            max_clip_seconds=settings.max_clip_seconds,
            max_clip_fps=settings.max_clip_fps,
            max_clip_frames=settings.max_clip_frames,
        )

    async def _own_identity(self, guild_id: int, user_id: int) -> Identity:
        for identity in await self.bot.store.list_identities(guild_id, user_id):
            if identity.owner_id == user_id and not identity.on_behalf:
                return identity
        raise NotFound("You haven't enrolled your own face yet.", hint="Use /enroll with a few photos of yourself first.")

    async def start_swap(
        self,
        interaction: discord.Interaction[FamswapBot],
        clip: bytes,
        clip_name: str,
        identity: Identity,
        *,
        face: int | None = None,
        quality: str | None = None,
        request_message_id: int | None = None,
        also: list[tuple[Identity, int | None]] | None = None,
    ) -> Job:
        """Queue a swap job for a checked clip, post its status message and tell the user where to look. ``also``:
        more people for the same clip, each with their face (0-based) or None."""
        others = also or []
        for person in [identity] + [i for i, _ in others]:
            if person.faceset is None:  # a face set being rebuilt with more photos is fine: the old one is used
                state = "still being built" if person.status is IdentityStatus.PREPARING else "not usable yet"
                raise NotAllowed(
                    f"**{person.display_name}**'s face set is {state}.",
                    hint="Wait for the enrollment message, or add clearer photos with /enroll.",
                )
        assert interaction.guild_id is not None
        settings = self.bot.settings
        names = " and ".join([identity.display_name] + [i.display_name for i, _ in others])
        spec = SwapJob(
            identity_id=identity.id,
            identity_name=identity.display_name,
            clip_name=clip_name,
            track=None if face is None else face - 1,  # "Face N" on the contact sheet counts from 1
            also_identity_ids=[i.id for i, _ in others],
            also_identity_names=[i.display_name for i, _ in others],
            also_faces=[f for _, f in others],
            quality=quality or settings.quality,
            # The worker fits the video to this: the guild's upload limit, or the host's smaller cap.
            max_bytes=min(filesize_limit(self.bot, interaction.guild_id), settings.output_max_bytes),
            title=f"{names} → {clip_name}",
        )
        return await self._queue(interaction, clip, spec, request_message_id)

    async def _queue(
        self, interaction: discord.Interaction[FamswapBot], clip: bytes, spec: SwapJob, request_message_id: int | None
    ) -> Job:
        assert interaction.guild_id is not None
        ids = [c.identity_id for c in spec.cast() if c.identity_id is not None]
        job = await self.bot.store.enqueue(interaction.guild_id, interaction.user.id, spec, identity_ids=ids, input=clip)
        status = await announce_job(interaction, job, request_message_id=request_message_id)
        await interaction.edit_original_response(
            content=f"Queued as job #{job.id}. I'll post progress and the result here: {status.jump_url}"
        )
        return job

    async def pick_face(self, interaction: discord.Interaction[FamswapBot], job_id: int, face: int) -> None:
        """A "Face N" button under a contact sheet: start the same swap with that face chosen for the first person
        still without one (the worker asks again for the next, when that is still a guess)."""
        assert interaction.guild_id is not None
        store = self.bot.store
        job = await store.get_job(job_id, guild_id=interaction.guild_id)
        if interaction.user.id != job.owner_id:
            await interaction.response.send_message(f"Only <@{job.owner_id}> can choose — it's their swap.", ephemeral=True)
            return
        asked = job.payload
        if not isinstance(asked, SwapJob) or not job.identity_ids:
            raise NotFound(f"Job #{job.id} is not a swap.", hint="Start a new one with /swap.")
        cast = asked.cast()
        if cast[0].identity_id is None:  # a payload from before typed jobs: the identity is on the job row
            asked = replace(asked, identity_id=job.identity_ids[0])
            cast = asked.cast()
        position = next((k for k, c in enumerate(cast) if c.face is None), None)
        if position is None:
            raise NotFound("Every face of that swap is already chosen.", hint="Start a new one with /swap.")
        taken = next((c.identity_name for c in cast if c.face == face - 1), None)
        if taken is not None:
            await interaction.response.send_message(f"Face {face} is already becoming **{taken}**: pick another one.",
                                                    ephemeral=True)  # fmt: skip
            return
        for c in cast:  # a share may have been taken back since
            assert c.identity_id is not None
            await store.check_can_use(interaction.guild_id, c.identity_id, interaction.user.id)
        await interaction.response.defer(ephemeral=True, thinking=True)
        clip = await self._clip_of(job)
        sheet = interaction.message
        spec = replace(asked.with_face(position, face - 1),
                       max_bytes=min(filesize_limit(self.bot, interaction.guild_id), self.bot.settings.output_max_bytes))
        await self._queue(interaction, clip, spec, sheet.id if sheet else None)
        try:  # the new job holds its own copy of the clip: the question's copy goes now
            await store.discard_result(interaction.guild_id, job.id, interaction.user.id)
        except NotFound:
            pass
        if sheet is not None:  # one choice per sheet: the buttons go (best effort: the job is already queued)
            try:
                await sheet.edit(content=f"{sheet.content}\n→ Face {face} chosen.", view=None)
            except discord.HTTPException as exc:
                log.info("could not remove the face buttons of message %s: %s", sheet.id, exc)

    async def _clip_of(self, job: Job) -> bytes:
        # A finished job lets go of its input; a "needs a choice" result keeps the clip as its video instead.
        ref = job.input
        if ref is None:
            try:
                ref = (await self.bot.store.get_result(job.guild_id, job.id, job.owner_id)).video
            except NotFound:
                ref = None
        if ref is None:
            raise NotFound("The clip of that swap is no longer stored.", hint="Start again with /swap.")
        return await self.bot.store.read_blob(ref)

    # ------------------------------------------------------------------------------------------ watching jobs

    @app_commands.command(name="status")
    @app_commands.guild_only()
    async def status(self, interaction: discord.Interaction[FamswapBot]) -> None:
        """Your queued and running jobs: where they are in the queue and when they should be done."""
        assert interaction.guild_id is not None
        store = self.bot.store
        jobs = await store.list_jobs(interaction.guild_id, interaction.user.id, active_only=True)
        if not jobs:
            await interaction.response.send_message("You have no jobs queued or running.", ephemeral=True)
            return
        lines = []
        for job in jobs:
            position = await store.queue_position(job.id)
            if job.status is JobStatus.QUEUED:
                state = f"queued, {position.position or '?'} in line"
            else:
                state = f"{stage_name(job.progress.stage).lower()} {progress_bar(job.progress.percent)}".rstrip()
            eta = f" · done in {format_duration(position.eta_seconds)}" if position.eta_seconds is not None else ""
            lines.append(f"**#{job.id}** {job_title(job)} — {state}{eta}")
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @app_commands.command(name="cancel")
    @app_commands.guild_only()
    async def cancel(self, interaction: discord.Interaction[FamswapBot], job: int | None = None) -> None:
        """Stop one of your jobs (your latest one when none is named).

        Parameters
        ----------
        job
            The job number, as shown in its status message
        """
        assert interaction.guild_id is not None
        store = self.bot.store
        if job is None:
            active = await store.list_jobs(interaction.guild_id, interaction.user.id, active_only=True, limit=1)
            if not active:
                await interaction.response.send_message("You have no jobs queued or running.", ephemeral=True)
                return
            job = active[0].id
        cancelled = await store.cancel_job(interaction.guild_id, job, interaction.user.id, is_admin=checks.is_admin(interaction))
        if cancelled.status is JobStatus.CANCELLED:
            text = f"Cancelled job #{job}."
        else:
            text = f"Stopping job #{job} — the worker stops within a few seconds."
        await interaction.response.send_message(text, ephemeral=True)

    @cancel.autocomplete("job")
    async def _cancel_job_choices(
        self, interaction: discord.Interaction[FamswapBot], value: str
    ) -> list[app_commands.Choice[int]]:
        if interaction.guild_id is None:
            return []
        jobs = await self.bot.store.list_jobs(interaction.guild_id, interaction.user.id, active_only=True)
        return [
            app_commands.Choice(name=f"#{j.id} {job_title(j)}"[:100], value=j.id) for j in jobs if value in str(j.id) or value.lower() in job_title(j).lower()
        ][:25]


async def setup(bot: FamswapBot) -> None:
    await bot.add_cog(Swap(bot))
