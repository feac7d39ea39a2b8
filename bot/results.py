"""Posting what a finished job made: a new message replying to the request and mentioning the requester.

Swap results carry the video (when it fits the guild's upload limit) and the before/after GIF. A video over the
limit, or one Discord refuses with 413 / 40005, is handed back to the worker as a re-encode job (``refit_of``) and
the smaller copy is posted when it is done. Enrollment results show the face-set summary and the thumbnail grid
(each rejected upload with its reason, e.g. a photo of someone else), or ask with "Add anyway" / "Leave them out"
when new photos do not look like the person enrolled before; a clip with several faces and no choice shows the
numbered contact sheet with a button per face; failures get the worker's short explanation and hint.

Where an admin set "results visible to: the requester", results go to the requester only: an ephemeral follow-up
while the request's interaction token lives, else a direct message, else a short note in the channel with a
"Show me" button only the requester can use. (The contact sheet stays in the channel: it shows the clip's actors,
and its buttons must keep working there.)
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import discord

from bot.uploads import sniff
from bot.views.show_result import show_result_view
from common.errors import FamswapError, NotFound
from storage import (
    BlobRef,
    Job,
    JobKind,
    JobPost,
    JobStatus,
    JobUpdate,
    PrepareJob,
    RefitJob,
    Result,
    SwapJob,
    UploadStatus,
    Visibility,
)

if TYPE_CHECKING:
    from bot.app import FamswapBot

log = logging.getLogger(__name__)

TOO_LARGE_CODE = 40005
REFIT_MARGIN = 0.92  # aim below the limit: the multipart envelope and the GIF share the request
# Discord's interaction tokens live 15 minutes; stop using one a little before, so a send never races its expiry.
TOKEN_LIFETIME = timedelta(minutes=14)

Attachment = tuple[str, bytes]  # (file name, bytes): re-made into a discord.File for every try
Deliver = Callable[[str, list[Attachment], "discord.ui.View | None"], Awaitable[discord.Message]]


def token_alive(post: JobPost) -> bool:
    """Whether the request's interaction token can still be used for follow-ups (ephemeral answers)."""
    if post.interaction_id is None or not post.interaction_token:
        return False
    return datetime.now(UTC) - discord.utils.snowflake_time(post.interaction_id) < TOKEN_LIFETIME


def interaction_webhook(bot: FamswapBot, token: str) -> discord.Webhook:
    """The follow-up webhook of an interaction known only by its token (as ``Interaction.followup`` builds it:
    an application webhook, the only kind that may send ephemeral messages)."""
    data: Any = {"id": bot.application_id, "type": 3, "token": token}
    return discord.Webhook.from_state(data=data, state=bot._connection)


async def results_private(bot: FamswapBot, guild_id: int) -> bool:
    """Whether the guild's admins made results visible to their requester only."""
    try:
        guild = await bot.store.get_guild(guild_id)
    except NotFound:
        return False
    return guild.settings.result_visibility is Visibility.OWNER


def discord_files(files: list[Attachment]) -> list[discord.File]:
    return [discord.File(io.BytesIO(data), filename=name) for name, data in files]


def filesize_limit(bot: FamswapBot, guild_id: int) -> int:
    """The guild's upload limit for the bot (boost tier aware), never a hard-coded number when the guild is known."""
    guild = bot.get_guild(guild_id)
    return guild.filesize_limit if guild is not None else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def _reference(job: Job, post: JobPost) -> discord.MessageReference:
    target = post.request_message_id or post.status_message_id
    return discord.MessageReference(
        message_id=target, channel_id=post.channel_id, guild_id=job.guild_id, fail_if_not_exists=False  # type: ignore[arg-type]
    )


def _mention_owner(job: Job) -> discord.AllowedMentions:
    return discord.AllowedMentions(users=[discord.Object(job.owner_id)], replied_user=False)


def _too_large(exc: discord.HTTPException) -> bool:
    return exc.status == 413 or exc.code == TOO_LARGE_CODE


async def post_outcome(
    bot: FamswapBot, channel: discord.PartialMessageable, update: JobUpdate, *, deliver: Deliver | None = None
) -> int | None:
    """Post the outcome of a finished job; returns the message id (None when there is nothing to post).

    ``deliver`` overrides where it goes (the "Show me" button answers ephemerally); by default the channel, or the
    requester alone when the guild keeps results private."""
    job, post = update.job, update.post
    if job.status is JobStatus.FAILED:
        return (await _channel_sender(channel, job, post)(_failure_text(job), [], None)).id
    if job.status is not JobStatus.SUCCEEDED:
        return None  # cancelled: the status message says so
    result = update.result
    if result is not None and result.report.get("needs_choice"):
        return await _post_choice(bot, _channel_sender(channel, job, post), job, result)
    if result is not None and result.report.get("needs_confirm"):
        return await _post_confirm(_channel_sender(channel, job, post), job, result)
    shown_again = deliver is not None  # "Show me": the first delivery already asked for a smaller copy if needed
    if deliver is None:
        private = await results_private(bot, job.guild_id)
        deliver = _private_sender(bot, channel, job, post) if private else _channel_sender(channel, job, post)
    if job.kind is JobKind.PREPARE:
        return await _post_faceset(bot, deliver, job)
    return await _post_video(bot, deliver, job, post, result, refit=not shown_again)


def _channel_sender(channel: discord.PartialMessageable, job: Job, post: JobPost) -> Deliver:
    """A reply to the request in its channel, mentioning the requester."""

    async def send(text: str, files: list[Attachment], view: discord.ui.View | None) -> discord.Message:
        kwargs: dict[str, object] = {"files": discord_files(files), "reference": _reference(job, post),
                                     "allowed_mentions": _mention_owner(job)}
        if view is not None:
            kwargs["view"] = view
        return await channel.send(text[:2000], **kwargs)  # type: ignore[arg-type]

    return send


def _private_sender(bot: FamswapBot, channel: discord.PartialMessageable, job: Job, post: JobPost) -> Deliver:
    """To the requester alone: ephemeral follow-up, else a DM, else a note in the channel with a "Show me" button.
    A refusal as too large propagates (the caller tries again with less); other failures fall through."""

    async def send(text: str, files: list[Attachment], view: discord.ui.View | None) -> discord.Message:
        if post.interaction_token and token_alive(post):
            try:
                hook = interaction_webhook(bot, post.interaction_token)
                return await hook.send(text[:2000], files=discord_files(files), ephemeral=True, wait=True,
                                       allowed_mentions=discord.AllowedMentions.none())
            except discord.HTTPException as exc:
                if _too_large(exc):
                    raise
                log.info("job %s: ephemeral follow-up failed (%s); trying a DM", job.id, exc)
        guild = bot.get_guild(job.guild_id)
        where = f"From **{guild.name}**: " if guild is not None else ""
        try:
            user = bot.get_user(job.owner_id) or await bot.fetch_user(job.owner_id)
            return await user.send((where + text)[:2000], files=discord_files(files))
        except discord.HTTPException as exc:
            if _too_large(exc):
                raise
            log.info("job %s: could not DM the requester (%s); leaving a note in the channel", job.id, exc)
        note = (f"<@{job.owner_id}> your result is ready. On this server results are shown only to the person who "
                "asked, and I couldn't message you privately — press **Show me** to see it.")
        return await _channel_sender(channel, job, post)(note, [], show_result_view(job.id))

    return send


def _names(job: Job) -> tuple[str, str]:
    """Who the job is about and the clip's name as the user sent it, for messages."""
    spec = job.payload
    if isinstance(spec, SwapJob):
        name = " and ".join(c.identity_name for c in spec.cast() if c.identity_name)
    else:
        name = spec.identity_name if isinstance(spec, PrepareJob | RefitJob) else ""
    clip = spec.clip_name if isinstance(spec, SwapJob | RefitJob) else "clip.mp4"
    return name or "them", clip


def _refit_of(job: Job, max_bytes: int) -> RefitJob:
    """A re-encode of ``job``'s video to at most ``max_bytes``, shown under the same names."""
    name, clip = _names(job)
    return RefitJob(refit_of=job.id, max_bytes=max_bytes, identity_id=next(iter(job.identity_ids), None),
                    identity_name=name, clip_name=clip, title=job.payload.title)


def _failure_text(job: Job) -> str:
    name, clip = _names(job)
    if job.kind is JobKind.PREPARE:
        what = f"build **{name}**'s face set"
    elif job.kind is JobKind.REFIT:
        what = "make the video small enough for this server"
    else:
        what = f"put **{name}** into *{clip}*"
    reason = job.error or "The worker stopped without saying why."
    return f"<@{job.owner_id}> sorry — I couldn't {what}. {reason}"


async def _file(bot: FamswapBot, ref: BlobRef, filename: str) -> Attachment:
    """A stored file as an attachment; a name without extension gets the one its bytes show (jpeg, png…)."""
    data = await bot.store.read_blob(ref)
    if not PurePath(filename).suffix:
        found = sniff(data[:64])
        filename += "." + (found[1] if found else "png")
    return filename, data


async def _post_video(
    bot: FamswapBot, deliver: Deliver, job: Job, post: JobPost, result: Result | None, *, refit: bool = True
) -> int:
    limit = filesize_limit(bot, job.guild_id)
    name, clip = _names(job)
    stem = PurePath(clip).stem or "clip"
    video = result.video if result is not None else None
    gif = result.comparison if result is not None else None
    text = f"<@{job.owner_id}> here is **{name}** in *{clip}* (AI face swap)."
    if job.kind is JobKind.REFIT:
        text = f"<@{job.owner_id}> here is the smaller copy of **{name}** in *{clip}* (AI face swap)."
    notes = result.report.get("notes") if result is not None else None
    if isinstance(notes, list) and notes:  # e.g. the face turns further than the enrolled photos do
        text += "\n" + "\n".join(f"-# {note}" for note in notes if isinstance(note, str))

    # Attempts from the richest message down: video + GIF, then GIF alone, then words alone.
    attempts: list[list[tuple[BlobRef, str]]] = []
    if video is not None and video.size <= limit:
        attempts.append([(video, f"{stem}-famswap.mp4")] + ([(gif, "before-after.gif")] if gif and gif.size <= limit else []))
    attempts.append([(gif, "before-after.gif")] if gif is not None and gif.size <= limit else [])
    if attempts[-1]:
        attempts.append([])
    note: str | None = None  # asked for once, whichever attempt first goes without the video
    for number, attempt in enumerate(attempts):
        body = text
        if video is not None and not any(ref is video for ref, _ in attempt):
            if note is None:
                note = (await _refit_note(bot, job, post, video, limit) if refit
                        else f"\nThe video is over this server's upload limit ({_mb(limit)}).")
            body += note
        files = [await _file(bot, ref, filename) for ref, filename in attempt]
        try:
            return (await deliver(body, files, None)).id
        except discord.HTTPException as exc:
            if not _too_large(exc) or number == len(attempts) - 1:
                raise
            log.info("job %s: Discord refused %s as too large; trying with less", job.id, [f for _, f in attempt])
    raise AssertionError("unreachable")  # the last attempt either returns or raises


async def _refit_note(bot: FamswapBot, job: Job, post: JobPost, video: BlobRef, limit: int) -> str:
    """Ask the worker for a copy under the limit (once per job); the words that explain the missing video."""
    if job.kind is JobKind.REFIT:
        return f"\nI couldn't get the video under this server's upload limit ({_mb(limit)}), sorry."
    try:
        data = await bot.store.read_blob(video)
        refit = await bot.store.enqueue(
            job.guild_id,
            job.owner_id,
            _refit_of(job, int(limit * REFIT_MARGIN)),
            identity_ids=job.identity_ids,
            input=data,
            priority=1,
            enforce_quota=False,
        )
        await bot.store.record_post(
            refit.id, channel_id=post.channel_id, request_message_id=post.request_message_id or post.status_message_id
        )
    except FamswapError as exc:
        return f"\nThe video is over this server's upload limit ({_mb(limit)}) and I couldn't shrink it: {exc.user_text()}"
    return f"\nThe video is over this server's upload limit ({_mb(limit)}); I'm making a smaller copy and will post it here."


async def _post_choice(bot: FamswapBot, deliver: Deliver, job: Job, result: Result) -> int:
    from bot.views.pick_face import pick_face_view

    faces = int(result.report.get("faces") or 0) or len(result.report.get("tracks") or [])
    name = str(result.report.get("choose_for") or _names(job)[0])  # with several people: the one asked about
    taken = [int(f) for f in result.report.get("taken") or []]
    text = (
        f"<@{job.owner_id}> this clip has {faces} faces. Which one should become **{name}**? "
        "The numbers match the picture." + (f" (Face {', '.join(map(str, taken))} already chosen.)" if taken else "")
    )
    files = [await _file(bot, result.comparison, "faces")] if result.comparison is not None else []
    return (await deliver(text, files, pick_face_view(job.id, faces))).id


async def _post_confirm(deliver: Deliver, job: Job, result: Result) -> int:
    """New photos that do not look like the person enrolled before: ask before adding them (buttons only the
    requester can use; the question holds no face, so it goes where the request was)."""
    from bot.views.new_person import add_anyway_view

    name, _ = _names(job)
    message = str(result.report.get("message") or f"These files do not look like {name} as enrolled before.")
    text = f"<@{job.owner_id}> {message} Add them to **{name}** anyway?"
    return (await deliver(text, [], add_anyway_view(job.id))).id


async def _post_faceset(bot: FamswapBot, deliver: Deliver, job: Job) -> int:
    store = bot.store
    (identity_id,) = job.identity_ids
    identity = await store.get_identity(job.guild_id, identity_id)
    uploads = await store.list_uploads(job.guild_id, identity.id)
    rejected = [u for u in uploads if u.status is UploadStatus.REJECTED]
    lines = [
        f"<@{job.owner_id}> **{identity.display_name}** is enrolled: {identity.face_count} "
        f"face{'s' if identity.face_count != 1 else ''} kept from {len(uploads)} upload{'s' if len(uploads) != 1 else ''}."
    ]
    summary = identity.summary.get("text") if isinstance(identity.summary, dict) else None
    if summary:
        lines.append(str(summary)[:1200])
    for upload in rejected[:10]:
        lines.append(f"• {upload.filename}: {upload.reason or 'not used'}")
    if identity.face_count:
        lines.append(f"Try it: `/swap identity:{identity.display_name}` with a short clip.")
    files = [await _file(bot, identity.thumbnail, "faces")] if identity.thumbnail is not None else []
    return (await deliver("\n".join(lines), files, None)).id
