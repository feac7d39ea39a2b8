"""Keep Discord in step with jobs: one status message per job, edited with progress, and the outcome posted after.

Status lives in a normal channel message (bot token, never expires), not in the interaction response (its token
dies after 15 minutes). Storage remembers the channel and message ids (``record_post``), so after a restart the
poller picks up where the last process stopped: ``pending_updates`` lists every job whose state changed since it
was last shown, and ``get_partial_messageable(...).get_partial_message(...)`` edits without any cache.

Edits of one message are spaced at least ``bot.edit_interval`` seconds apart (intermediate states are simply never
shown); a message older than an hour, or one Discord refuses to edit (30046), is replaced by a fresh one; a 429
longer than the bot's ``max_ratelimit_timeout`` raises ``RateLimited``, which only postpones that job's next edit.

Where results are private to their requester (an admin setting), training previews are never put in the status
message: they go into the requester's ephemeral answer while its interaction token lives, and are not shown after.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import discord

from bot.results import interaction_webhook, post_outcome, results_private, token_alive
from bot.uploads import sniff
from common.errors import FamswapError
from storage import Job, JobKind, JobPost, JobStatus, JobUpdate

if TYPE_CHECKING:
    from bot.app import FamswapBot

log = logging.getLogger(__name__)

STATUS_MAX_AGE = timedelta(minutes=55)  # Discord limits edits of messages older than an hour (30046)
EDIT_LIMIT_CODE = 30046
ERROR_BACKOFF = 30.0

_STAGES = {
    "prepare": "Building the face set",
    "faces": "Finding the faces in the photos",
    "scan": "Finding faces in the clip",
    "actor": "Collecting the actor's face",
    "extract": "Finding faces",
    "detect": "Finding faces",
    "track": "Following the faces in the clip",
    "train": "Learning the face",
    "training": "Learning the face",
    "convert": "Swapping faces",
    "swap": "Swapping faces",
    "encode": "Encoding the video",
    "fit": "Shrinking the video",
}
_COLOURS = {
    JobStatus.QUEUED: discord.Colour.light_grey(),
    JobStatus.RUNNING: discord.Colour.blurple(),
    JobStatus.SUCCEEDED: discord.Colour.green(),
    JobStatus.FAILED: discord.Colour.red(),
    JobStatus.CANCELLED: discord.Colour.dark_grey(),
}


def progress_bar(percent: float | None, width: int = 12) -> str:
    """``▰▰▰▰▱▱▱▱▱▱▱▱ 33%`` (an empty string when the stage reports no percentage)."""
    if percent is None:
        return ""
    value = min(100.0, max(0.0, percent))
    filled = round(value / 100 * width)
    return "▰" * filled + "▱" * (width - filled) + f" {value:.0f}%"


def format_duration(seconds: float) -> str:
    """Rounded the way a person says it: "about 40 s", "about 4 min", "about 1 h 20 min"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"about {max(5, round(seconds / 5) * 5):.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60} min" if minutes % 60 else f"about {minutes // 60} h"


def stage_name(stage: str | None) -> str:
    if not stage:
        return "Working"
    return _STAGES.get(stage.lower(), stage.replace("_", " ").capitalize())


def job_title(job: Job) -> str:
    if job.payload.title:
        return job.payload.title
    return "Building a face set" if job.kind is JobKind.PREPARE else f"famswap job #{job.id}"


async def render_status(bot: FamswapBot, job: Job, *, private: bool = False) -> tuple[discord.Embed, list[discord.File]]:
    """The status message of a job as it stands: embed (stage, bar, queue position, ETA) and the latest preview
    (``private``: no preview, and the result is said to go to the requester alone)."""
    store = bot.store
    lines = [f"Requested by <@{job.owner_id}>"]
    eta: float | None = None
    position = None
    if not job.status.is_final:
        try:
            position = await store.queue_position(job.id)
            eta = position.eta_seconds
        except Exception:  # an ETA is a nicety; never let it block the update
            log.debug("no queue position for job %s", job.id, exc_info=True)
            position = None
    files: list[discord.File] = []
    embed = discord.Embed(title=job_title(job), colour=_COLOURS.get(job.status))
    if job.status is JobStatus.QUEUED:
        where = f"{_ordinal(position.position)} in line" if position is not None and position.position else "waiting"
        lines.append(f"⏳ Queued — {where}" + (f" · done in {format_duration(eta)}" if eta is not None else ""))
        if job.error:
            lines.append(f"Trying again after a problem: {job.error}")
    elif job.status is JobStatus.RUNNING:
        bar = progress_bar(job.progress.percent)
        lines.append(f"⚙️ **{stage_name(job.progress.stage)}** {bar}".rstrip())
        if job.progress.message:
            lines.append(job.progress.message)
        if job.cancel_requested:
            lines.append("Stopping…")
        elif eta is not None:
            lines.append(f"Done in {format_duration(eta)}")
        if job.progress.preview is not None and private:
            lines.append("Previews are shown to the requester only.")
        elif job.progress.preview is not None:
            data = await store.read_blob(job.progress.preview)
            kind = sniff(data[:64])
            ext = kind[1] if kind else "png"
            files.append(discord.File(io.BytesIO(data), filename=f"preview.{ext}"))
            embed.set_image(url=f"attachment://preview.{ext}")
    elif job.status is JobStatus.SUCCEEDED:
        lines.append("✅ Done — the result went to the requester only." if private
                     else "✅ Done — the result is in the reply below.")
    elif job.status is JobStatus.FAILED:
        lines.append(f"❌ {job.error or 'It failed.'}")
    else:
        lines.append("Cancelled." + (f" {job.error}" if job.error else ""))
    embed.description = "\n".join(lines)
    embed.set_footer(text=f"job #{job.id}")
    return embed, files


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


async def announce_job(
    interaction: discord.Interaction[FamswapBot], job: Job, *, request_message_id: int | None = None
) -> discord.Message:
    """Post a new job's status message in the interaction's channel and remember it in storage.

    If the bot cannot post there, the job is cancelled (nobody would see it) and the error propagates.
    """
    bot = interaction.client
    assert interaction.channel_id is not None
    channel = bot.get_partial_messageable(interaction.channel_id, guild_id=interaction.guild_id)
    embed, files = await render_status(bot, job)
    try:
        message = await channel.send(embed=embed, files=files)
    except discord.HTTPException:
        await bot.store.cancel_job(job.guild_id, job.id, job.owner_id)
        raise
    await bot.store.record_post(
        job.id,
        channel_id=channel.id,
        status_message_id=message.id,
        request_message_id=request_message_id,
        interaction_id=interaction.id,
        interaction_token=interaction.token,
    )
    await bot.store.update_post(job.id, posted_seq=job.update_seq)  # what it shows is current: no re-edit
    return message


class ProgressPoller:
    """The background loop: poll storage, edit status messages, post outcomes. Owned by the Swap cog."""

    def __init__(self, bot: FamswapBot) -> None:
        self.bot = bot
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._busy = False  # inside a pass (storage and Discord calls that should not be cut off)
        self._last_edit: dict[int, float] = {}  # job id → monotonic time of its last status edit
        self._private_preview: dict[int, str] = {}  # job id → digest of the preview last shown to the requester
        # (job id, final?) → no attempt before (rate limits, errors). Kept apart for final updates, so a long 429 on
        # a progress edit never holds back the result.
        self._not_before: dict[tuple[int, bool], float] = {}

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._busy = False
        self._task = asyncio.create_task(self._run(), name="famswap-progress")

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop between passes: a pass in flight finishes first, so no result is half-posted and no storage call is
        cut off inside its transaction. Only a pass stuck beyond ``timeout`` is cancelled."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        if not self._busy:
            task.cancel()  # asleep or waiting for the gateway: nothing to interrupt
        try:
            await asyncio.wait_for(task, timeout)
        except (asyncio.CancelledError, TimeoutError):
            pass

    async def _run(self) -> None:
        await self.bot.wait_until_ready()
        while not self._stopping.is_set():
            self._busy = True
            try:
                await self.tick()
            except Exception:
                log.exception("progress poll failed; trying again")
            finally:
                self._busy = False
            if self._stopping.is_set():
                break
            await asyncio.sleep(self.bot.poll_interval)

    async def tick(self) -> None:
        """One pass over the jobs whose state changed since they were last shown."""
        for update in await self.bot.store.pending_updates(0, limit=100):
            job = update.job
            now = time.monotonic()
            if now < self._not_before.get((job.id, job.status.is_final), 0.0):
                continue
            last = self._last_edit.get(job.id)
            if not job.status.is_final and last is not None and now - last < self.bot.edit_interval:
                continue  # the next pass shows whatever the state is by then
            try:
                await self.show(update)
            except Exception:  # one job's trouble must not hold back the others
                log.exception("could not show job %s; will retry", job.id)
                self._not_before[(job.id, job.status.is_final)] = time.monotonic() + ERROR_BACKOFF

    async def show(self, update: JobUpdate) -> None:
        job, post = update.job, update.post
        store = self.bot.store
        key = (job.id, job.status.is_final)
        channel = self.bot.get_partial_messageable(post.channel_id, guild_id=job.guild_id)
        try:
            private = await results_private(self.bot, job.guild_id)
            if job.status.is_final and post.result_message_id is None:
                result_id = await post_outcome(self.bot, channel, update)
                if result_id is not None:
                    await store.update_post(job.id, result_message_id=result_id)
            if private and not job.status.is_final:
                await self._preview_to_requester(job, post)
            if job.kind is not JobKind.REFIT:  # a re-encode has no status message of its own
                await self._refresh_status(channel, job, post, private=private)
        except discord.RateLimited as exc:
            log.warning("rate limited for %.0f s while updating job %s; skipping this update", exc.retry_after, job.id)
            self._not_before[key] = time.monotonic() + exc.retry_after
            return
        except discord.HTTPException as exc:
            if exc.status == 429:
                self._not_before[key] = time.monotonic() + ERROR_BACKOFF
                return
            if exc.status not in (403, 404):  # gone or forbidden: retrying cannot help, so it counts as shown
                log.warning("could not update job %s in Discord (%s); will retry", job.id, exc)
                self._not_before[key] = time.monotonic() + ERROR_BACKOFF
                return
            log.warning("giving up on showing job %s in channel %s: %s", job.id, post.channel_id, exc)
        except FamswapError as exc:  # e.g. its identity was forgotten meanwhile: nothing left to show
            log.info("job %s cannot be shown any more: %s", job.id, exc)
        if job.status.is_final:
            await store.update_post(job.id, posted_seq=job.update_seq, interaction_token=None)
            self._last_edit.pop(job.id, None)
            self._private_preview.pop(job.id, None)
            self._not_before.pop((job.id, False), None)
            self._not_before.pop((job.id, True), None)
        else:
            await store.update_post(job.id, posted_seq=job.update_seq)
            self._last_edit[job.id] = time.monotonic()

    async def _preview_to_requester(self, job: Job, post: JobPost) -> None:
        """Show a new training preview in the requester's own ephemeral answer, while its token lives."""
        preview = job.progress.preview
        if preview is None or not post.interaction_token or not token_alive(post):
            return
        if self._private_preview.get(job.id) == preview.digest:
            return
        data = await self.bot.store.read_blob(preview)
        kind = sniff(data[:64])
        file = discord.File(io.BytesIO(data), filename=f"preview.{kind[1] if kind else 'png'}")
        try:
            # "@original": the interaction's own answer; the webhook only formats the id into the route.
            await interaction_webhook(self.bot, post.interaction_token).edit_message(
                "@original", attachments=[file]  # type: ignore[arg-type]
            )
        except discord.HTTPException as exc:
            log.info("job %s: could not show the preview to its requester: %s", job.id, exc)
        self._private_preview[job.id] = preview.digest

    async def _refresh_status(
        self, channel: discord.PartialMessageable, job: Job, post: JobPost, *, private: bool = False
    ) -> None:
        embed, files = await render_status(self.bot, job, private=private)
        old = post.status_message_id
        too_old = post.status_message_at is not None and datetime.now(UTC) - post.status_message_at > STATUS_MAX_AGE
        if old is None or (too_old and not job.status.is_final):
            await self._repost(channel, job, old, embed, files)
            return
        try:
            await channel.get_partial_message(old).edit(embed=embed, attachments=files)
            return
        except discord.NotFound:
            old = None  # deleted by someone: post a new one
        except discord.HTTPException as exc:
            if exc.code != EDIT_LIMIT_CODE:
                raise
            if job.status.is_final:  # the outcome is already posted below the old message; leave it be
                return
        embed, files = await render_status(self.bot, job, private=private)  # the files of the failed edit are spent
        await self._repost(channel, job, old, embed, files)

    async def _repost(
        self, channel: discord.PartialMessageable, job: Job, old: int | None, embed: discord.Embed, files: list[discord.File]
    ) -> None:
        message = await channel.send(embed=embed, files=files)
        await self.bot.store.update_post(job.id, status_message_id=message.id)
        if old is not None:
            try:  # the old message can no longer be edited: remove it rather than leave stale progress behind
                await channel.get_partial_message(old).delete()
            except discord.HTTPException:
                pass

