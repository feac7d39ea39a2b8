"""The storage API the bot, the worker and the CLI call: typed async methods, consent rules, no SQL outside storage/.

Open it once per process with ``async with open_storage(settings) as store:``. Every method that reads guild data
takes the guild id, so an identity never crosses guilds. Errors a user can cause are ``famswap.errors`` subclasses
whose message says what to do (``NotFound``, ``NotAllowed`` naming whom to ask, ``QuotaExceeded`` saying when the
limit resets).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from famswap.config import Settings
from famswap.errors import FamswapError, JobCancelled
from storage.records import (
    Bank,
    BlobRef,
    ForgetReport,
    Grant,
    Guild,
    GuildSettings,
    Heartbeat,
    Identity,
    IdentityStatus,
    Job,
    JobKind,
    JobPost,
    JobUpdate,
    QueuePosition,
    Result,
    SweepReport,
    Upload,
    UploadKind,
    UploadStatus,
    User,
)

Source = Path | bytes
"""A file to store: a path (streamed, encrypted chunk by chunk) or bytes already in memory."""


class LeaseLost(JobCancelled):
    """The worker no longer holds this job (its lease expired and another worker took it, or it was erased).

    A subclass of ``JobCancelled`` so a worker handles both the same way: stop, clean up, claim the next job.
    """


class BankConflict(FamswapError):
    """Another worker saved the guild's bank since this one loaded it: reload and merge, or retry the job."""


@dataclass(frozen=True)
class Limits:
    """The host's limits and retention, taken from Settings; a guild's settings may lower the quotas."""

    max_queued_per_user: int = 3
    max_queued_per_guild: int = 20
    daily_jobs_per_user: int = 20
    max_photos_per_identity: int = 60
    result_days: float = 30.0
    keep_uploads: bool = False
    guild_grace_days: float = 7.0
    retry_base_seconds: float = 30.0  # first retry delay; doubles per attempt
    retry_max_seconds: float = 3600.0
    progress_interval: float = 2.0  # at most one progress row write per job this often (stage changes always go)
    preview_interval: float = 10.0  # at most one preview image per job this often

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_queued_per_user=settings.max_queued_per_user,
            max_queued_per_guild=settings.max_queued_per_guild,
            daily_jobs_per_user=settings.daily_jobs_per_user,
            max_photos_per_identity=settings.max_photos_per_identity,
            result_days=settings.result_days,
            keep_uploads=settings.keep_uploads,
            guild_grace_days=settings.guild_grace_days,
        )


class _Unset:
    """Marks "leave this field as it is" where None is a meaningful value."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@asynccontextmanager
async def open_storage(
    settings: Settings, *, maintenance: bool = True, clock: Callable[[], float] = time.time
) -> AsyncIterator[Storage]:
    """Open the database (migrating it), load or create the key, and yield the API.

    ``maintenance`` runs the start-up pass (finish interrupted deletions, sweep orphan files older than an hour,
    remove temp folders of jobs that are over). Safe with several processes open at once.
    """
    raise NotImplementedError
    yield  # pragma: no cover


class Storage:
    """The one object clients use. Build it with ``open_storage``; tests may pass a fake ``clock``."""

    # ---------------------------------------------------------------- guilds and users
    async def ensure_guild(self, guild_id: int, name: str = "") -> Guild:
        """Create the guild's row if needed (and refresh its name); returns it."""
        raise NotImplementedError

    async def get_guild(self, guild_id: int) -> Guild:
        """The guild, or ``NotFound``."""
        raise NotImplementedError

    async def update_guild_settings(self, guild_id: int, **changes: Any) -> GuildSettings:
        """Change some ``GuildSettings`` fields (admin command); unknown names raise ``ValueError``."""
        raise NotImplementedError

    async def ensure_user(self, user_id: int, name: str = "") -> User:
        """Create the user's row if needed (and refresh the name); returns it."""
        raise NotImplementedError

    # ---------------------------------------------------------------- identities and consent
    async def create_identity(
        self,
        guild_id: int,
        owner_id: int,
        display_name: str,
        *,
        on_behalf: bool = False,
        subject_user_id: int | None = None,
        consent_confirmed_by: int | None = None,
    ) -> Identity:
        """Enroll a person in one guild, owned by ``owner_id``.

        Self-enrollment (``on_behalf=False``): the subject is the owner. Enrolling someone else needs
        ``consent_confirmed_by`` (who pressed "I have their permission"; recorded with the time), else ``NotAllowed``
        and nothing is stored. ``subject_user_id`` names the Discord member it is, when they have an account, so they
        can claim or delete it. Names are unique per owner in a guild (``NotAllowed`` otherwise).
        """
        raise NotImplementedError

    async def get_identity(self, guild_id: int, identity_id: int) -> Identity:
        """The identity if it belongs to ``guild_id``; ``NotFound`` otherwise (never reveals other guilds)."""
        raise NotImplementedError

    async def find_identity(self, guild_id: int, user_id: int, name: str) -> Identity:
        """Resolve a name typed by ``user_id`` (case-insensitive): theirs first, then ones shared with them.

        ``NotFound`` if no identity of that name exists in the guild; ``NotAllowed`` (saying whom to ask) if it exists
        but the user may not use it.
        """
        raise NotImplementedError

    async def list_identities(
        self, guild_id: int, user_id: int, *, prefix: str = "", limit: int | None = None
    ) -> list[Identity]:
        """Identities ``user_id`` may use in this guild (own, shared with them or everyone, or of which they are the
        subject), own first then by name; ``prefix`` filters names for autocomplete."""
        raise NotImplementedError

    async def check_can_use(self, guild_id: int, identity_id: int, user_id: int) -> Identity:
        """The identity if ``user_id`` may swap with it; else ``NotAllowed`` naming the owner to ask."""
        raise NotImplementedError

    async def share_identity(
        self, guild_id: int, identity_id: int, by_user_id: int, to_user_id: int | None
    ) -> Grant:
        """Let ``to_user_id`` (``None``: everyone in the guild) use the identity. Only the owner may share."""
        raise NotImplementedError

    async def unshare_identity(
        self, guild_id: int, identity_id: int, by_user_id: int, from_user_id: int | None
    ) -> int:
        """Revoke a grant (``None``: the everyone grant). Queued jobs that lose their permission are cancelled;
        returns how many. Only the owner (or the subject) may revoke."""
        raise NotImplementedError

    async def list_grants(self, guild_id: int, identity_id: int) -> list[Grant]:
        """Who the identity is shared with."""
        raise NotImplementedError

    async def claim_identity(self, guild_id: int, identity_id: int, user_id: int) -> Identity:
        """The subject of an on-behalf identity takes it over: they become the owner, every grant is revoked and
        other users' queued jobs with it are cancelled. ``NotAllowed`` unless ``user_id`` is its subject."""
        raise NotImplementedError

    async def set_identity_status(self, guild_id: int, identity_id: int, status: IdentityStatus) -> Identity:
        """Mark an identity empty / preparing / ready (the worker does this around a prepare job)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- uploads and face sets
    async def add_upload(
        self,
        guild_id: int,
        identity_id: int,
        by_user_id: int,
        source: Source,
        *,
        kind: UploadKind,
        filename: str,
    ) -> tuple[Upload, bool]:
        """Store a photo or video for an identity (encrypted). Returns ``(upload, is_new)``: the same content sent
        again for the same identity returns the existing upload and ``False``. Only the owner may add; at most
        ``max_photos_per_identity`` uploads (``QuotaExceeded``)."""
        raise NotImplementedError

    async def list_uploads(
        self, guild_id: int, identity_id: int, *, status: UploadStatus | None = None
    ) -> list[Upload]:
        """An identity's uploads, oldest first."""
        raise NotImplementedError

    async def record_upload_outcome(
        self,
        upload_id: int,
        status: UploadStatus,
        *,
        reason: str | None = None,
        faces_found: int = 0,
        quality: Mapping[str, Any] | None = None,
    ) -> Upload:
        """The worker's verdict on one upload after face extraction (rejections carry a reason a user can act on)."""
        raise NotImplementedError

    async def set_faceset(
        self,
        guild_id: int,
        identity_id: int,
        faceset: Source,
        *,
        face_count: int,
        summary: Mapping[str, Any],
        thumbnail: Source | None = None,
    ) -> Identity:
        """Store a new face set (an archive of the engine's face-set folder) and thumbnail grid; the identity becomes
        ready and its ``faceset_version`` increases. Raw uploads already judged are then deleted unless
        ``keep_uploads`` (retention)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- banks
    async def get_bank(self, guild_id: int) -> Bank | None:
        """The guild's bank, or None before the first training."""
        raise NotImplementedError

    async def save_bank(
        self,
        guild_id: int,
        *,
        base_version: int,
        encoder: Source | None = None,
        decoders: Mapping[int, Source] | None = None,
        decoder_versions: Mapping[int, int] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Bank:
        """Replace the encoder and/or some decoders (others stay). ``base_version`` is the version the worker loaded
        (0 when there was no bank): ``BankConflict`` if another save happened since. Decoders of identities erased
        meanwhile are dropped, never resurrected."""
        raise NotImplementedError

    # ---------------------------------------------------------------- stored files
    async def read_blob(self, ref: BlobRef) -> bytes:
        """Decrypt a stored file into memory."""
        raise NotImplementedError

    async def decrypt_to(self, ref: BlobRef, dst: Path) -> Path:
        """Decrypt a stored file to ``dst`` (mode 0600), e.g. inside ``job_dir``; streamed, not held in memory."""
        raise NotImplementedError

    def job_dir(self, job_id: int) -> Path:
        """The job's private temp folder (created, mode 0700). Remove it with ``remove_job_dir`` when the job ends."""
        raise NotImplementedError

    def remove_job_dir(self, job_id: int) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- jobs: the bot's side
    async def enqueue(
        self,
        guild_id: int,
        owner_id: int,
        kind: JobKind,
        payload: Mapping[str, Any] | None = None,
        *,
        identity_ids: Sequence[int] = (),
        input: Source | None = None,
        priority: int = 0,
        max_attempts: int = 3,
        enforce_quota: bool = True,
    ) -> Job:
        """Queue a job. Checks that ``owner_id`` may use every identity (``NotAllowed``) and, with
        ``enforce_quota``, the queued-job limits per user and per guild and the rolling 24-hour quotas
        (``QuotaExceeded`` saying the limit and when it resets). ``input`` (e.g. the clip) is stored encrypted."""
        raise NotImplementedError

    async def get_job(self, job_id: int, *, guild_id: int | None = None) -> Job:
        """A job (``NotFound`` if missing or, when ``guild_id`` is given, in another guild)."""
        raise NotImplementedError

    async def list_jobs(
        self, guild_id: int, owner_id: int | None = None, *, active_only: bool = False, limit: int = 25
    ) -> list[Job]:
        """Newest first; ``owner_id`` None lists the whole guild (admin view)."""
        raise NotImplementedError

    async def queue_position(self, job_id: int) -> QueuePosition:
        """Where a queued job stands under the fair claim order, and an ETA from recent job durations."""
        raise NotImplementedError

    async def cancel_job(self, guild_id: int, job_id: int, by_user_id: int, *, is_admin: bool = False) -> Job:
        """Queued: cancelled at once. Running: ``cancel_requested`` is set and the worker sees it at its next
        heartbeat. Only the owner or an admin (``NotAllowed``)."""
        raise NotImplementedError

    async def get_result(self, guild_id: int, job_id: int, user_id: int) -> Result:
        """A finished job's result if ``user_id`` may see it (owner, or anyone in the guild for guild results)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- jobs: the bot's Discord bookkeeping
    async def record_post(
        self,
        job_id: int,
        *,
        channel_id: int,
        status_message_id: int | None = None,
        request_message_id: int | None = None,
        interaction_id: int | None = None,
        interaction_token: str | None = None,
    ) -> JobPost:
        """Remember where the job's status lives in Discord (one row per job; calling again replaces it)."""
        raise NotImplementedError

    async def update_post(
        self,
        job_id: int,
        *,
        status_message_id: int | None = UNSET,
        posted_seq: int | None = UNSET,
        result_message_id: int | None = UNSET,
        interaction_token: str | None = UNSET,
    ) -> JobPost:
        """Change some bookkeeping fields: a new status message (its time is recorded, for the 1-hour edit limit),
        the ``update_seq`` just shown (marks the update posted), the result message."""
        raise NotImplementedError

    async def pending_updates(self, after_seq: int = 0, *, limit: int = 50) -> list[JobUpdate]:
        """Jobs with a post whose status/progress changed since last shown (``posted_seq < update_seq``), oldest
        change first, with their result when finished. After a restart call it with ``after_seq=0``; while running,
        pass the largest ``job.update_seq`` seen to skip what is already being handled."""
        raise NotImplementedError

    # ---------------------------------------------------------------- jobs: the worker's side
    async def claim(
        self, worker_id: str, *, kinds: Sequence[JobKind] | None = None, lease_seconds: float = 60.0
    ) -> Job | None:
        """Take the next job atomically (never two workers for one job). Fair: highest priority first, then the
        guild and the user with the fewest running jobs and served longest ago. Expired leases are re-queued first
        (counting the attempt). Returns None when nothing is ready."""
        raise NotImplementedError

    async def wait_for_job(
        self,
        worker_id: str,
        *,
        kinds: Sequence[JobKind] | None = None,
        lease_seconds: float = 60.0,
        timeout: float | None = None,
        poll_min: float = 0.05,
        poll_max: float = 2.0,
    ) -> Job | None:
        """``claim`` in a loop with exponential backoff between polls; None after ``timeout`` seconds."""
        raise NotImplementedError

    async def heartbeat(self, job_id: int, worker_id: str, *, lease_seconds: float = 60.0) -> Heartbeat:
        """Extend the lease. ``LeaseLost`` (a ``JobCancelled``) if this worker no longer holds the job."""
        raise NotImplementedError

    async def report_progress(
        self,
        job_id: int,
        worker_id: str,
        *,
        stage: str,
        percent: float | None = None,
        message: str | None = None,
        preview: Source | None = None,
        force: bool = False,
    ) -> bool:
        """Record progress at a bounded rate (a new stage or ``force`` always goes through; previews at most every
        ``preview_interval``); a dropped preview is not an error. It does not extend the lease: keep calling
        ``heartbeat``. Returns whether a row was written."""
        raise NotImplementedError

    async def save_checkpoint(
        self, job_id: int, worker_id: str, state: Mapping[str, Any], *, checkpoint: Source | None = None
    ) -> None:
        """Store the resume point (and optionally a file, e.g. a training checkpoint) so a job re-claimed after a
        crash continues from there (``job.state`` / ``job.checkpoint``)."""
        raise NotImplementedError

    async def complete(
        self,
        job_id: int,
        worker_id: str,
        *,
        video: Source | None = None,
        comparison: Source | None = None,
        report: Mapping[str, Any] | None = None,
    ) -> Job:
        """Finish the job successfully; its result (if any files or report) expires after ``result_days``."""
        raise NotImplementedError

    async def fail(self, job_id: int, worker_id: str, error: str, *, retry: bool = True) -> Job:
        """Record a failure (``error`` is shown to the user). With ``retry`` and attempts left, the job is queued
        again after an exponential backoff; otherwise it is failed for good."""
        raise NotImplementedError

    async def finish_cancelled(self, job_id: int, worker_id: str) -> Job:
        """The worker stopped a job after seeing ``cancel_requested``."""
        raise NotImplementedError

    async def stalled_jobs(self) -> list[Job]:
        """Running jobs whose lease has expired (their worker died); ``claim`` re-queues them."""
        raise NotImplementedError

    # ---------------------------------------------------------------- forgetting and retention
    async def forget_identity(
        self, guild_id: int, identity_id: int, by_user_id: int, *, is_admin: bool = False
    ) -> ForgetReport:
        """Erase an identity: uploads, face set, thumbnail, decoder, grants, and every job and result that used it.
        Allowed to its owner, its subject, or a guild admin."""
        raise NotImplementedError

    async def forget_user(self, user_id: int, *, guild_id: int | None = None) -> ForgetReport:
        """Erase everything of a user (in one guild, or everywhere): identities they own or are the subject of,
        their jobs, results and grants."""
        raise NotImplementedError

    async def forget_guild(self, guild_id: int) -> ForgetReport:
        """Erase a whole guild (admin purge, or the grace period after the bot was removed)."""
        raise NotImplementedError

    async def schedule_guild_deletion(self, guild_id: int, after_days: float | None = None) -> Guild:
        """The bot left the guild: erase its data after ``after_days`` (default ``guild_grace_days``)."""
        raise NotImplementedError

    async def cancel_guild_deletion(self, guild_id: int) -> Guild:
        """The bot is back in the guild before the grace period ended."""
        raise NotImplementedError

    async def run_due_deletions(self) -> list[int]:
        """Erase guilds whose grace period is over; returns their ids."""
        raise NotImplementedError

    async def expire_results(self) -> int:
        """Delete results (rows and files) past ``expires_at``; returns how many."""
        raise NotImplementedError

    async def maintenance(self, *, orphan_age_seconds: float = 3600.0) -> SweepReport:
        """Finish interrupted deletions, then remove files without rows and temp files older than
        ``orphan_age_seconds`` (younger ones may belong to another process writing right now)."""
        raise NotImplementedError
