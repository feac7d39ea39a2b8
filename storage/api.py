"""The storage API the bot, the worker and the CLI call: typed async methods, consent rules, no SQL outside storage/.

Open it once per process with ``async with open_storage(settings) as store:``. Every method that reads guild data
takes the guild id, so an identity never crosses guilds. Errors a user can cause are ``common.errors`` subclasses
whose message says what to do (``NotFound``, ``NotAllowed`` naming whom to ask, ``QuotaExceeded`` saying when the
limit resets).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common.config import Settings
from common.errors import FamswapError, JobCancelled, NotAllowed, NotFound, QuotaExceeded
from storage import files, forget, queue
from storage import queries as Q
from storage.crypto import KEY_HINT, KeyFileError, load_or_create_key
from storage.db import Database, Tx, open_database
from storage.files import FileStore, Staged
from storage.jobs import JobSpec, WarmJob, job_from_dict
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
    JobStatus,
    JobUpdate,
    QueuePosition,
    Result,
    SweepReport,
    Upload,
    UploadKind,
    UploadStatus,
    User,
    Visibility,
    Warmth,
    ts,
)

log = logging.getLogger(__name__)
DAY = 86400.0

Source = Path | bytes

# The command line acts as one local user in one local "server" (guild); Discord ids are never 0.
LOCAL_GUILD = 0
LOCAL_USER = 0
# Warm jobs are famswap's own, not any member's: this owner (no Discord id is 0) is in no /status and no quota.
SYSTEM_USER = 0
WARM_PRIORITY = -100  # below every job a user queues: a claim takes any of those first


def _trained_key(trained: Mapping[int, int]) -> str:
    """Identities and the face-set version each was trained on, as warm_runs stores them: "12:3,15:1"."""
    return ",".join(f"{i}:{v}" for i, v in sorted(trained.items()))


def _present(staged: Staged | None) -> Staged:
    """A staged file of a source that was given (``_staging`` yields None only for a None source)."""
    if staged is None:
        raise AssertionError("a given source was not staged")
    return staged
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
    max_queued_total: int | None = None  # every guild together (None: no host-wide cap)
    daily_jobs_total: int | None = None
    max_photos_per_identity: int = 60
    result_days: float = 30.0
    choice_seconds: float = 86400.0  # a "which face?" question (and the clip it keeps) lives this long at most
    keep_uploads: bool = False
    guild_grace_days: float = 7.0
    retry_base_seconds: float = 30.0  # first retry delay; doubles per attempt
    retry_max_seconds: float = 3600.0
    progress_interval: float = (
        2.0  # at most one progress row write per job this often (stage changes always go)
    )
    preview_interval: float = 10.0  # at most one preview image per job this often

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_queued_per_user=settings.max_queued_per_user,
            max_queued_per_guild=settings.max_queued_per_guild,
            daily_jobs_per_user=settings.daily_jobs_per_user,
            max_queued_total=settings.max_queued_total,
            daily_jobs_total=settings.daily_jobs_total,
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


def _folder_name(attempt: str) -> str:
    if not attempt or not all(c.isalnum() or c in "-_." for c in attempt) or attempt in (".", ".."):
        raise ValueError(f"not an attempt name: {attempt!r}")
    return attempt


def _mention(user_id: int) -> str:
    return f"<@{user_id}>"


def _digest(ref: BlobRef | None) -> str | None:
    return None if ref is None else ref.digest


def _not_yours(identity: Identity) -> NotAllowed:
    return NotAllowed(
        f"You may not use {identity.display_name}: they were enrolled by {_mention(identity.owner_id)}.",
        hint=f"Ask {_mention(identity.owner_id)} to share them with you (/share).",
    )


def _no_identity(identity_id: int) -> NotFound:
    return NotFound(
        f"There is no identity #{identity_id} in this server.", hint="/identities lists the ones you can use."
    )


def _no_job(job_id: int) -> NotFound:
    return NotFound(f"There is no job #{job_id} here (finished jobs are kept for a while only).")


async def _load_key(db: Database, key_path: Path) -> Any:
    """The key, checked against the one this database was created with (its id is kept in ``meta``)."""
    stored = await db.scalar(Q.GET_META, ("key_id",))
    path = Path(key_path).expanduser()
    if stored is not None and not path.exists():
        raise KeyFileError(
            f"The encryption key file {path} is missing, but {db.path} holds data encrypted with a key.",
            hint=KEY_HINT,
        )
    keys = await asyncio.to_thread(load_or_create_key, path)
    if stored is None:
        async with db.write() as tx:
            await tx.run(Q.SET_META_IF_ABSENT, ("key_id", keys.key_id.hex()))
            stored = await tx.scalar(Q.GET_META, ("key_id",))
    if stored != keys.key_id.hex():
        raise KeyFileError(
            f"The key in {path} is not the key the data in {db.path} was encrypted with.", hint=KEY_HINT
        )
    return keys


@asynccontextmanager
async def open_storage(
    settings: Settings,
    *,
    maintenance: bool = True,
    clock: Callable[[], float] = time.time,
    synchronous: str = "FULL",
) -> AsyncIterator[Storage]:
    """Open the database (migrating it), load or create the key, and yield the API.

    ``maintenance`` runs the start-up pass (finish interrupted deletions, sweep orphan files older than an hour,
    remove temp folders of jobs that are over). Safe with several processes open at once. ``synchronous`` is
    SQLite's setting (``FULL``: a commit survives a power cut; ``NORMAL``: faster, survives a crash).
    """
    for folder in (settings.home, settings.jobs_dir):  # private, also when they were made before with 0755
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
    async with open_database(settings.database_path, synchronous=synchronous) as db:
        keys = await _load_key(db, settings.key_path)
        store = Storage(
            db,
            FileStore(settings.files_dir, keys),
            Limits.from_settings(settings),
            settings.jobs_dir,
            clock=clock,
        )
        if maintenance:
            report = await store.maintenance()
            if report != SweepReport():
                log.info("start-up maintenance: %s", report)
        yield store


class Storage:
    """The one object clients use. Build it with ``open_storage``; tests may pass a fake ``clock``."""

    def __init__(
        self,
        db: Database,
        file_store: FileStore,
        limits: Limits,
        jobs_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.files = file_store
        self.limits = limits
        self.jobs_dir = Path(jobs_dir)
        self.clock = clock
        self._queue_limits = queue.QueueLimits(
            max_queued_per_user=limits.max_queued_per_user,
            max_queued_per_guild=limits.max_queued_per_guild,
            daily_jobs_per_user=limits.daily_jobs_per_user,
            daily_jobs_per_guild=None,
            max_queued_total=limits.max_queued_total,
            daily_jobs_total=limits.daily_jobs_total,
        )
        # job id -> (last progress write, its stage, last preview write): the bounded progress rate, per process.
        self._progress_marks: dict[int, tuple[float, str, float]] = {}

    # ---------------------------------------------------------------- internals
    async def _identity(self, tx: Tx, guild_id: int, identity_id: int) -> Identity:
        row = await tx.one(Q.GET_IDENTITY, (identity_id, guild_id))
        if row is None:
            raise _no_identity(identity_id)
        return Identity.from_row(row)

    async def _may_use(self, tx: Tx, identity: Identity, user_id: int) -> bool:
        if user_id in (identity.owner_id, identity.subject_user_id):
            return True
        return await tx.scalar(Q.HAS_GRANT, (identity.id, user_id)) is not None

    async def _bank(self, tx: Tx, guild_id: int) -> Bank | None:
        row = await tx.one(Q.GET_BANK, (guild_id,))
        if row is None:
            return None
        decoders = await tx.all(Q.GET_BANK_DECODERS, (guild_id,))
        return Bank(
            guild_id=guild_id,
            version=row["version"],
            encoder=BlobRef.maybe(row["encoder_digest"], row["encoder_size"]),
            decoders={d["identity_id"]: BlobRef(d["digest"], d["size"]) for d in decoders},
            decoder_versions={d["identity_id"]: d["faceset_version"] for d in decoders},
            config=json.loads(row["config"]),
            updated_at=ts(row["updated_at"]),
            trained_steps={d["identity_id"]: d["trained_steps"] for d in decoders},
            trained_seconds={d["identity_id"]: d["trained_seconds"] for d in decoders},
        )

    @asynccontextmanager
    async def _staging(self, *sources: Source | None) -> AsyncIterator[list[Staged | None]]:
        """Encrypt the sources to temp files before the transaction; whatever was not installed is removed."""
        staged: list[Staged | None] = []
        try:
            for source in sources:
                staged.append(None if source is None else await files.stage(self.files, source))
            yield staged
        finally:
            for item in staged:
                if item is not None:
                    self.files.discard(item)

    @asynccontextmanager
    async def _held(self, job_id: int, worker_id: str) -> AsyncIterator[Tx]:
        """A write transaction on a job this worker must hold; ``LeaseLost`` otherwise."""
        try:
            async with self.db.write() as tx:
                yield tx
        except queue.LeaseLostError as exc:
            raise LeaseLost(exc.why, hint="Stop this job and claim the next one.") from None

    async def _finish_deletions(self, marked: list[str]) -> None:
        if marked:
            await files.finish_deletions(self.db, self.files, marked)

    async def _stop_jobs_without_permission(
        self, tx: Tx, identity: Identity, now: float, *, stop_running: bool
    ) -> tuple[int, list[str]]:
        """After a grant was revoked or an identity changed hands: cancel queued jobs (and, with ``stop_running``,
        ask running ones to stop) whose owner may no longer use the identity."""
        cancelled = 0
        marked: list[str] = []
        for row in await tx.all(Q.QUEUED_JOBS_USING, (identity.id,)):
            if await self._may_use(tx, identity, row["owner_id"]):
                continue
            if row["status"] == JobStatus.QUEUED.value:
                why = f"Cancelled: {identity.display_name} is no longer shared with you."
                marked += await queue.finish(tx, row["id"], JobStatus.CANCELLED, now, why)
                cancelled += 1
            elif stop_running:
                await tx.run(Q.REQUEST_CANCEL, (row["id"],))
        return cancelled, marked

    # ---------------------------------------------------------------- guilds and users
    async def ensure_guild(self, guild_id: int, name: str = "") -> Guild:
        """Create the guild's row if needed (and refresh its name); returns it."""
        async with self.db.write() as tx:
            row = await tx.row(Q.UPSERT_GUILD, {"id": guild_id, "name": name, "now": self.clock()})
        return Guild.from_row(row)

    async def get_guild(self, guild_id: int) -> Guild:
        """The guild, or ``NotFound``."""
        row = await self.db.one(Q.GET_GUILD, (guild_id,))
        if row is None:
            raise NotFound(f"famswap has no data for server {guild_id}.", hint="It is created on first use.")
        return Guild.from_row(row)

    async def update_guild_settings(self, guild_id: int, **changes: Any) -> GuildSettings:
        """Change some ``GuildSettings`` fields (admin command); unknown names raise ``ValueError``."""
        if "result_visibility" in changes:
            changes["result_visibility"] = Visibility(changes["result_visibility"])
        for key in ("allowed_channel_ids", "allowed_role_ids"):
            if key in changes:
                changes[key] = tuple(int(v) for v in changes[key])
        async with self.db.write() as tx:
            await tx.run(Q.ENSURE_GUILD, (guild_id, self.clock()))
            row = await tx.row(Q.GET_GUILD, (guild_id,))
            try:
                settings = replace(GuildSettings.from_json(row["settings"]), **changes)
            except TypeError as exc:
                raise ValueError(f"unknown guild setting in {sorted(changes)}: {exc}") from None
            await tx.run(Q.SET_GUILD_SETTINGS, (settings.to_json(), guild_id))
        return settings

    async def reconcile_guilds(self, present: set[int]) -> tuple[list[int], list[int]]:
        """At the bot's start-up: schedule the erase of every guild the bot is no longer in (removed while it was
        offline) and cancel it for guilds it is in again. Guild 0, the command line's own, is left alone.
        Returns (scheduled, cancelled) guild ids."""
        scheduled: list[int] = []
        cancelled: list[int] = []
        for guild_id, is_scheduled in await self.db.all(Q.GUILD_IDS, ()):
            if guild_id == 0:
                continue
            if guild_id not in present and not is_scheduled:
                await self.schedule_guild_deletion(guild_id)
                scheduled.append(guild_id)
            elif guild_id in present and is_scheduled:
                await self.cancel_guild_deletion(guild_id)
                cancelled.append(guild_id)
        return scheduled, cancelled

    async def ensure_user(self, user_id: int, name: str = "") -> User:
        """Create the user's row if needed (and refresh the name); returns it."""
        async with self.db.write() as tx:
            row = await tx.row(Q.UPSERT_USER, {"id": user_id, "name": name, "now": self.clock()})
        return User.from_row(row)

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
        name = " ".join(display_name.split())
        if not name or len(name) > 64:
            raise NotAllowed(
                "A name must be 1 to 64 characters.", hint="Pick a shorter name, such as a first name."
            )
        now = self.clock()
        if not on_behalf:
            subject_user_id, confirmed_by, confirmed_at = owner_id, None, None
        elif consent_confirmed_by is None:
            raise NotAllowed(
                f"{name} was not enrolled: enrolling someone else needs their permission.",
                hint='Confirm that they (or their parent) agreed, with the "I have their permission" button.',
            )
        else:
            confirmed_by, confirmed_at = consent_confirmed_by, now
        async with self.db.write() as tx:
            await tx.run(Q.ENSURE_GUILD, (guild_id, now))
            await tx.run(Q.ENSURE_USER, (owner_id, now))
            try:
                row = await tx.row(
                    Q.INSERT_IDENTITY,
                    {
                        "guild": guild_id,
                        "owner": owner_id,
                        "name": name,
                        "subject": subject_user_id,
                        "on_behalf": int(on_behalf),
                        "confirmed_by": confirmed_by,
                        "confirmed_at": confirmed_at,
                        "now": now,
                    },
                )
            except sqlite3.IntegrityError:
                raise NotAllowed(
                    f"You already enrolled someone called {name} here.",
                    hint="Add photos to that one with /enroll, or pick another name.",
                ) from None
        return Identity.from_row(row)

    async def get_identity(self, guild_id: int, identity_id: int) -> Identity:
        """The identity if it belongs to ``guild_id``; ``NotFound`` otherwise (never reveals other guilds)."""
        async with self.db.read() as tx:
            return await self._identity(tx, guild_id, identity_id)

    async def find_identity(self, guild_id: int, user_id: int, name: str) -> Identity:
        """Resolve a name typed by ``user_id`` (case-insensitive): theirs first, then ones shared with them.

        ``NotFound`` if no identity of that name exists in the guild; ``NotAllowed`` (saying whom to ask) if it exists
        but the user may not use it.
        """
        async with self.db.read() as tx:
            rows = await tx.all(
                Q.IDENTITIES_BY_NAME, {"guild": guild_id, "name": " ".join(name.split()), "user": user_id}
            )
            candidates = [Identity.from_row(row) for row in rows]
            for identity in candidates:
                if await self._may_use(tx, identity, user_id):
                    return identity
        if candidates:
            raise _not_yours(candidates[0])
        raise NotFound(
            f"Nobody called {name} is enrolled in this server.",
            hint="/identities lists the people you can use; /enroll adds someone.",
        )

    async def list_identities(
        self, guild_id: int, user_id: int, *, prefix: str = "", limit: int | None = None
    ) -> list[Identity]:
        """Identities ``user_id`` may use in this guild (own, shared with them or everyone, or of which they are the
        subject), own first then by name; ``prefix`` filters names for autocomplete."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = await self.db.all(
            Q.USABLE_IDENTITIES,
            {"guild": guild_id, "user": user_id, "prefix": pattern, "limit": -1 if limit is None else limit},
        )
        return [Identity.from_row(row) for row in rows]

    async def check_can_use(self, guild_id: int, identity_id: int, user_id: int) -> Identity:
        """The identity if ``user_id`` may swap with it; else ``NotAllowed`` naming the owner to ask."""
        async with self.db.read() as tx:
            identity = await self._identity(tx, guild_id, identity_id)
            if await self._may_use(tx, identity, user_id):
                return identity
        raise _not_yours(identity)

    async def share_identity(
        self, guild_id: int, identity_id: int, by_user_id: int, to_user_id: int | None
    ) -> Grant:
        """Let ``to_user_id`` (``None``: everyone in the guild) use the identity. Only the owner may share."""
        now = self.clock()
        async with self.db.write() as tx:
            identity = await self._identity(tx, guild_id, identity_id)
            if by_user_id != identity.owner_id:
                raise NotAllowed(
                    f"Only {_mention(identity.owner_id)}, who enrolled {identity.display_name}, can share them.",
                    hint=f"Ask {_mention(identity.owner_id)}.",
                )
            key = 0 if to_user_id is None else to_user_id
            await tx.run(Q.INSERT_GRANT, (identity.id, guild_id, key, by_user_id, now))
            row = await tx.row(Q.GET_GRANT, (identity.id, key))
        return Grant.from_row(row)

    async def unshare_identity(
        self, guild_id: int, identity_id: int, by_user_id: int, from_user_id: int | None
    ) -> int:
        """Revoke a grant (``None``: the everyone grant). Queued jobs that lose their permission are cancelled;
        returns how many. Only the owner (or the subject) may revoke."""
        now = self.clock()
        async with self.db.write() as tx:
            identity = await self._identity(tx, guild_id, identity_id)
            if by_user_id not in (identity.owner_id, identity.subject_user_id):
                raise NotAllowed(
                    f"Only {_mention(identity.owner_id)}, who enrolled {identity.display_name}, can stop sharing them.",
                    hint=f"Ask {_mention(identity.owner_id)}.",
                )
            await tx.run(Q.DELETE_GRANT, (identity.id, 0 if from_user_id is None else from_user_id))
            cancelled, marked = await self._stop_jobs_without_permission(
                tx, identity, now, stop_running=False
            )
        await self._finish_deletions(marked)
        return cancelled

    async def list_grants(self, guild_id: int, identity_id: int) -> list[Grant]:
        """Who the identity is shared with."""
        async with self.db.read() as tx:
            identity = await self._identity(tx, guild_id, identity_id)
            return [Grant.from_row(row) for row in await tx.all(Q.LIST_GRANTS, (identity.id,))]

    async def claim_identity(self, guild_id: int, identity_id: int, user_id: int) -> Identity:
        """The subject of an on-behalf identity takes it over: they become the owner, every grant is revoked and
        other users' queued jobs with it are cancelled. ``NotAllowed`` unless ``user_id`` is its subject."""
        now = self.clock()
        async with self.db.write() as tx:
            identity = await self._identity(tx, guild_id, identity_id)
            if identity.subject_user_id != user_id:
                raise NotAllowed(
                    f"Only the person {identity.display_name} is can claim them.",
                    hint=f"If that is you, ask {_mention(identity.owner_id)} to name you as the subject.",
                )
            if identity.owner_id == user_id:
                return identity
            await tx.run(Q.ENSURE_USER, (user_id, now))
            row = await tx.row(Q.TRANSFER_IDENTITY, {"id": identity.id, "user": user_id, "now": now})
            await tx.run(Q.DELETE_GRANTS_OF_IDENTITY, (identity.id,))
            claimed = Identity.from_row(row)
            _, marked = await self._stop_jobs_without_permission(tx, claimed, now, stop_running=True)
        await self._finish_deletions(marked)
        return claimed

    async def set_identity_status(self, guild_id: int, identity_id: int, status: IdentityStatus) -> Identity:
        """Mark an identity empty / preparing / ready (the worker does this around a prepare job)."""
        async with self.db.write() as tx:
            row = await tx.one(
                Q.SET_IDENTITY_STATUS, (IdentityStatus(status).value, self.clock(), identity_id, guild_id)
            )
        if row is None:
            raise _no_identity(identity_id)
        return Identity.from_row(row)

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
        async with self._staging(source) as (maybe_staged,):
            staged = _present(maybe_staged)
            now = self.clock()
            async with self.db.write() as tx:
                identity = await self._identity(tx, guild_id, identity_id)
                if by_user_id != identity.owner_id:
                    raise NotAllowed(
                        f"Only {_mention(identity.owner_id)}, who enrolled {identity.display_name}, can add photos.",
                        hint=f"Ask {_mention(identity.owner_id)}, or enroll yourself with /enroll.",
                    )
                existing = await tx.one(Q.UPLOAD_BY_CONTENT, (identity.id, staged.digest))
                if existing is not None:
                    return Upload.from_row(existing), False
                count = await tx.scalar(Q.COUNT_UPLOADS, (identity.id,))
                if count >= self.limits.max_photos_per_identity:
                    raise QuotaExceeded(
                        f"{identity.display_name} already has {count} photos and videos "
                        f"(the limit is {self.limits.max_photos_per_identity}).",
                        hint="That is plenty for a good face set; forget the identity to start over with other photos.",
                    )
                ref = await files.commit_staged(tx, self.files, staged, now)
                row = await tx.row(
                    Q.INSERT_UPLOAD,
                    {
                        "guild": guild_id,
                        "identity": identity.id,
                        "owner": identity.owner_id,
                        "digest": ref.digest,
                        "kind": UploadKind(kind).value,
                        "filename": Path(filename).name[:200],
                        "size": ref.size,
                        "now": now,
                    },
                )
        return Upload.from_row(row), True

    async def list_uploads(
        self, guild_id: int, identity_id: int, *, status: UploadStatus | None = None
    ) -> list[Upload]:
        """An identity's uploads, oldest first."""
        rows = await self.db.all(
            Q.LIST_UPLOADS,
            {"identity": identity_id, "guild": guild_id, "status": None if status is None else status.value},
        )
        return [Upload.from_row(row) for row in rows]

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
        async with self.db.write() as tx:
            row = await tx.one(
                Q.SET_UPLOAD_OUTCOME,
                {
                    "id": upload_id,
                    "status": UploadStatus(status).value,
                    "reason": reason,
                    "faces": faces_found,
                    "quality": json.dumps(dict(quality or {})),
                },
            )
        if row is None:
            raise NotFound(f"Upload {upload_id} no longer exists (its identity may have been forgotten).")
        return Upload.from_row(row)

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
        async with self._staging(faceset, thumbnail) as (staged_set, staged_thumb):
            now = self.clock()
            async with self.db.write() as tx:
                identity = await self._identity(tx, guild_id, identity_id)
                set_ref = await files.commit_staged(tx, self.files, _present(staged_set), now)
                thumb_ref = (
                    None
                    if staged_thumb is None
                    else await files.commit_staged(tx, self.files, staged_thumb, now)
                )
                row = await tx.row(
                    Q.SET_FACESET,
                    {
                        "id": identity.id,
                        "faceset": set_ref.digest,
                        "faceset_size": set_ref.size,
                        "thumbnail": None if thumb_ref is None else thumb_ref.digest,
                        "thumbnail_size": None if thumb_ref is None else thumb_ref.size,
                        "face_count": face_count,
                        "summary": json.dumps(dict(summary)),
                        "now": now,
                    },
                )
                old = [_digest(identity.faceset), _digest(identity.thumbnail)]
                if not self.limits.keep_uploads:
                    old += [r[0] for r in await tx.all(Q.DROP_JUDGED_UPLOAD_FILES, (identity.id,))]
                marked = await files.release(tx, old, now)
        await self._finish_deletions(marked)
        return Identity.from_row(row)

    # ---------------------------------------------------------------- banks
    async def get_bank(self, guild_id: int) -> Bank | None:
        """The guild's bank, or None before the first training."""
        async with self.db.read() as tx:
            return await self._bank(tx, guild_id)

    async def save_bank(
        self,
        guild_id: int,
        *,
        base_version: int,
        encoder: Source | None = None,
        decoders: Mapping[int, Source] | None = None,
        decoder_versions: Mapping[int, int] | None = None,
        config: Mapping[str, Any] | None = None,
        trained: Mapping[int, tuple[int, float]] | None = None,
    ) -> Bank:
        """Replace the encoder and/or some decoders (others stay). ``base_version`` is the version the worker loaded
        (0 when there was no bank): ``BankConflict`` if another save happened since. Decoders of identities erased
        meanwhile are dropped, never resurrected. ``trained``: identity id → (steps, seconds) this save's training
        adds to the decoder's count."""
        decoders = dict(decoders or {})
        order = sorted(decoders)
        async with self._staging(encoder, *(decoders[i] for i in order)) as staged:
            now = self.clock()
            async with self.db.write() as tx:
                current = await self._bank(tx, guild_id)
                version = 0 if current is None else current.version
                if version != base_version:
                    raise BankConflict(
                        f"The face bank of this server changed while training (version {version}, expected {base_version}).",
                        hint="The job will retry with the newer bank.",
                    )
                await tx.run(Q.ENSURE_GUILD, (guild_id, now))
                old: list[str | None] = []
                enc_ref = None
                if staged[0] is not None:
                    enc_ref = await files.commit_staged(tx, self.files, staged[0], now)
                    old.append(_digest(current.encoder) if current else None)
                config_json = json.dumps(
                    dict(config) if config is not None else (current.config if current else {})
                )
                await tx.run(
                    Q.UPSERT_BANK,
                    {
                        "guild": guild_id,
                        "encoder": None if enc_ref is None else enc_ref.digest,
                        "encoder_size": None if enc_ref is None else enc_ref.size,
                        "config": config_json,
                        "now": now,
                    },
                )
                versions = dict(decoder_versions or {})
                added = dict(trained or {})
                for identity_id, item in zip(order, staged[1:], strict=True):
                    if await tx.one(Q.GET_IDENTITY, (identity_id, guild_id)) is None:
                        continue  # erased while training: never bring its decoder back
                    ref = await files.commit_staged(tx, self.files, _present(item), now)
                    old.append(await tx.scalar(Q.DECODER_OF, (identity_id,)))
                    await tx.run(
                        Q.UPSERT_DECODER,
                        {
                            "identity": identity_id,
                            "guild": guild_id,
                            "digest": ref.digest,
                            "size": ref.size,
                            "version": versions.get(identity_id, 0),
                            "now": now,
                            "steps": added.get(identity_id, (0, 0.0))[0],
                            "seconds": added.get(identity_id, (0, 0.0))[1],
                        },
                    )
                marked = await files.release(tx, old, now)
                bank = await self._bank(tx, guild_id)
        await self._finish_deletions(marked)
        assert bank is not None
        return bank

    # ---------------------------------------------------------------- the warm bank
    async def enqueue_warm(self, guild_id: int, spec: WarmJob | None = None) -> Job | None:
        """Queue a warm job for the guild's ready identities (None when it has none). A warm job of the guild
        already queued is replaced, a running one asked to stop (it saves what it trained): the new one trains the
        people as they are now. Warm jobs belong to famswap itself (owner ``SYSTEM_USER``), count against no quota
        and have the lowest priority."""
        spec = spec or WarmJob(title="warming the face bank")
        async with self.db.write() as tx:
            ready = [row["id"] for row in await tx.all(Q.READY_IDENTITIES_OF_GUILD, (guild_id,))]
            if not ready:
                return None
            now = self.clock()
            marked: list[str] = []
            for row in await tx.all(Q.LIVE_WARM_JOBS_OF_GUILD, (guild_id,)):
                if row["status"] == JobStatus.QUEUED.value:
                    marked += await queue.finish(tx, row["id"], JobStatus.CANCELLED, now, "Replaced.")
                else:
                    await tx.run(Q.REQUEST_CANCEL, (row["id"],))
            await tx.run(Q.ENSURE_GUILD, (guild_id, now))
            await tx.run(Q.ENSURE_USER, (SYSTEM_USER, now))
            job = await queue.insert_job(tx, guild_id=guild_id, owner_id=SYSTEM_USER, spec=spec, identity_ids=ready,
                                         input_digest=None, input_size=None, priority=WARM_PRIORITY,
                                         max_attempts=3, now=now)
        await self._finish_deletions(marked)
        return job

    async def warm_seconds_used(self, guild_id: int) -> float:
        """Seconds the guild's bank was warmed in the last 24 hours (its daily allowance is spent from this)."""
        return float(await self.db.scalar(Q.WARM_SECONDS_SINCE, (guild_id, self.clock() - DAY)))

    async def record_warm_run(self, guild_id: int, job_id: int | None, *, started_at: float, seconds: float,
                              steps: int, stopped: str, trained: Mapping[int, int]) -> None:
        """Record one stretch of warming: ``trained`` is identity id → the face-set version it was trained on."""
        async with self.db.write() as tx:
            await tx.run(Q.INSERT_WARM_RUN, {"guild": guild_id, "job": job_id, "started": started_at,
                                              "seconds": seconds, "steps": steps, "stopped": stopped,
                                              "trained": _trained_key(trained)})

    async def guilds_to_warm(self, daily_seconds: float) -> list[int]:
        """Guilds an idle worker may warm now, least warmed today first: ready identities, no job waiting or running,
        allowance left today, and not at a plateau reached with the same people and face sets."""
        if daily_seconds <= 0:
            return []
        since = self.clock() - DAY
        found: list[tuple[float, int]] = []
        async with self.db.read() as tx:
            for (guild,) in await tx.all(Q.WARM_CANDIDATES):
                used = float(await tx.scalar(Q.WARM_SECONDS_SINCE, (guild, since)))
                if used >= daily_seconds:
                    continue
                ready = {r["id"]: r["faceset_version"] for r in await tx.all(Q.READY_IDENTITIES_OF_GUILD, (guild,))}
                if await tx.scalar(Q.LAST_PLATEAU, (guild,)) == _trained_key(ready):
                    continue
                found.append((used, guild))
        return [guild for _, guild in sorted(found)]

    async def waiting_work(self) -> bool:
        """Whether any job other than a warm one is waiting: a warming worker hands its job back for it."""
        return await self.db.scalar(Q.WAITING_WORK, (self.clock(),)) is not None

    async def warmth(self, guild_id: int) -> dict[int, Warmth]:
        """How warm each identity of the guild with a decoder is (identity id → ``Warmth``)."""
        async with self.db.read() as tx:
            bank = await self._bank(tx, guild_id)
            warming = await tx.scalar(Q.WARMING_GUILD, (guild_id,)) is not None
            plateau = await tx.scalar(Q.LAST_PLATEAU, (guild_id,))
            ready = {row["id"]: row["faceset_version"] for row in await tx.all(Q.READY_IDENTITIES_OF_GUILD, (guild_id,))}
        at_plateau = plateau is not None and plateau == _trained_key(ready)
        if bank is None:
            return {}
        return {i: Warmth(bank.trained_steps.get(i, 0), bank.trained_seconds.get(i, 0.0), warming, at_plateau)
                for i in bank.decoders}

    # ---------------------------------------------------------------- stored files
    async def read_blob(self, ref: BlobRef) -> bytes:
        """Decrypt a stored file into memory."""
        return await asyncio.to_thread(self.files.read, ref)

    async def decrypt_to(self, ref: BlobRef, dst: Path) -> Path:
        """Decrypt a stored file to ``dst`` (mode 0600), e.g. inside ``job_dir``; streamed, not held in memory."""
        return await asyncio.to_thread(self.files.decrypt_to, ref, dst)

    def job_dir(self, job_id: int, attempt: str) -> Path:
        """A private temp folder (created, mode 0700) for one attempt at a job: ``jobs/<job id>/<attempt>``. Each
        claim uses its own ``attempt`` name, so a worker whose lease expired never touches the folder of the worker
        that took the job over. Remove it with ``remove_job_dir`` when the attempt ends."""
        parent = self.jobs_dir / str(int(job_id))
        path = parent / _folder_name(attempt)
        for _ in range(3):  # another attempt may remove the (then empty) parent between the two mkdirs
            parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                path.mkdir(exist_ok=True, mode=0o700)
                return path
            except FileNotFoundError:
                continue
        raise FileNotFoundError(path)

    def remove_job_dir(self, job_id: int, attempt: str) -> None:
        """Remove one attempt's folder, and the job's folder once no other attempt uses it."""
        parent = self.jobs_dir / str(int(job_id))
        shutil.rmtree(parent / _folder_name(attempt), ignore_errors=True)
        with contextlib.suppress(OSError):
            parent.rmdir()  # only when empty: a later attempt may be working there

    async def sweep_job_dir(self, job_id: int) -> None:
        """Once the job is over (or erased), remove its whole folder: attempts of workers that died included."""
        rows = await self.db.all(Q.JOB_STATUS_AMONG, (json.dumps([int(job_id)]),))
        status = JobStatus(rows[0][1]) if rows else None
        if status is None or status.is_final:
            shutil.rmtree(self.jobs_dir / str(int(job_id)), ignore_errors=True)

    # ---------------------------------------------------------------- jobs: the bot's side
    async def enqueue(
        self,
        guild_id: int,
        owner_id: int,
        job: JobSpec | JobKind | str,
        payload: Mapping[str, Any] | None = None,
        *,
        identity_ids: Sequence[int] = (),
        input: Source | None = None,
        priority: int = 0,
        max_attempts: int = 3,
        enforce_quota: bool = True,
    ) -> Job:
        """Queue a job: a typed job (``storage.jobs``), or a kind and its fields (checked the same way:
        ``JobSpecError`` for unknown, missing or mistyped ones). Checks that ``owner_id`` may use every identity
        (``NotAllowed``) and, with ``enforce_quota``, the queued-job limits per user and per guild and the rolling
        24-hour quotas (``QuotaExceeded`` saying the limit and when it resets). ``input`` (e.g. the clip) is stored
        encrypted."""
        if isinstance(job, JobSpec):
            if payload is not None:
                raise TypeError("enqueue takes a typed job or a kind with its fields, not both")
            spec = job
        else:
            spec = job_from_dict(job, payload or {})
        if enforce_quota and input is not None:
            await self.check_quota(guild_id, owner_id)  # before encrypting a large clip for nothing
        async with self._staging(input) as (staged,):
            now = self.clock()
            async with self.db.write() as tx:
                await tx.run(Q.ENSURE_GUILD, (guild_id, now))
                await tx.run(Q.ENSURE_USER, (owner_id, now))
                for identity_id in sorted(set(identity_ids)):
                    identity = await self._identity(tx, guild_id, identity_id)
                    if not await self._may_use(tx, identity, owner_id):
                        raise _not_yours(identity)
                if enforce_quota:
                    guild = GuildSettings.from_json((await tx.row(Q.GET_GUILD, (guild_id,)))["settings"])
                    await queue.check_quotas(
                        tx, guild_id, owner_id, queue.effective_limits(self._queue_limits, guild), now
                    )
                ref = None if staged is None else await files.commit_staged(tx, self.files, staged, now)
                return await queue.insert_job(
                    tx,
                    guild_id=guild_id,
                    owner_id=owner_id,
                    spec=spec,
                    identity_ids=identity_ids,
                    input_digest=None if ref is None else ref.digest,
                    input_size=None if ref is None else ref.size,
                    priority=priority,
                    max_attempts=max_attempts,
                    now=now,
                )

    async def get_job(self, job_id: int, *, guild_id: int | None = None) -> Job:
        """A job (``NotFound`` if missing or, when ``guild_id`` is given, in another guild)."""
        row = await self.db.one(Q.GET_JOB, (job_id,))
        if row is None or (guild_id is not None and row["guild_id"] != guild_id):
            raise _no_job(job_id)
        return Job.from_row(row)

    async def list_jobs(
        self, guild_id: int, owner_id: int | None = None, *, active_only: bool = False, limit: int = 25
    ) -> list[Job]:
        """Newest first; ``owner_id`` None lists the whole guild (admin view)."""
        rows = await self.db.all(
            Q.LIST_JOBS, {"guild": guild_id, "owner": owner_id, "active": int(active_only), "limit": limit}
        )
        return [Job.from_row(row) for row in rows]

    async def queue_position(self, job_id: int) -> QueuePosition:
        """Where a queued job stands under the fair claim order, and an ETA from recent job durations."""
        try:
            return await queue.queue_position(self.db, job_id, self.clock())
        except LookupError:
            raise _no_job(job_id) from None

    async def cancel_job(self, guild_id: int, job_id: int, by_user_id: int, *, is_admin: bool = False) -> Job:
        """Queued: cancelled at once. Running: ``cancel_requested`` is set and the worker sees it at its next
        heartbeat. Only the owner or an admin (``NotAllowed``)."""
        now = self.clock()
        marked: list[str] = []
        async with self.db.write() as tx:
            row = await tx.one(Q.GET_JOB, (job_id,))
            if row is None or row["guild_id"] != guild_id:
                raise _no_job(job_id)
            job = Job.from_row(row)
            if by_user_id != job.owner_id and not is_admin:
                raise NotAllowed(
                    f"Only {_mention(job.owner_id)}, who started job #{job.id}, or an admin can cancel it.",
                    hint=f"Ask {_mention(job.owner_id)}.",
                )
            if job.status is JobStatus.QUEUED:
                marked = await queue.finish(
                    tx, job.id, JobStatus.CANCELLED, now, "Cancelled before it started."
                )
            elif job.status is JobStatus.RUNNING:
                await tx.run(Q.REQUEST_CANCEL, (job.id,))
            job = await queue.get_job(tx, job.id)
        await self._finish_deletions(marked)
        return job

    async def get_result(self, guild_id: int, job_id: int, user_id: int) -> Result:
        """A finished job's result if ``user_id`` may see it (owner, or anyone in the guild for guild results)."""
        row = await self.db.one(Q.GET_RESULT, (job_id,))
        if row is None or row["guild_id"] != guild_id:
            raise NotFound(
                f"Job #{job_id} has no result here (it may have expired).",
                hint=f"Results are kept {self.limits.result_days:g} days.",
            )
        result = Result.from_row(row)
        if result.visibility is Visibility.OWNER and user_id != result.owner_id:
            raise NotAllowed(
                f"The result of job #{job_id} is private to {_mention(result.owner_id)}.",
                hint=f"Ask {_mention(result.owner_id)} to post it.",
            )
        return result

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
        now = self.clock()
        async with self.db.write() as tx:
            job = await tx.one(Q.GET_JOB, (job_id,))
            if job is None:
                raise _no_job(job_id)
            row = await tx.row(
                Q.UPSERT_POST,
                {
                    "job": job_id,
                    "guild": job["guild_id"],
                    "channel": channel_id,
                    "status_message": status_message_id,
                    "status_at": None if status_message_id is None else now,
                    "request_message": request_message_id,
                    "interaction": interaction_id,
                    "token": interaction_token,
                },
            )
        return JobPost.from_row(row)

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

        def flag(value: Any) -> tuple[int, Any]:
            return (0, None) if value is UNSET else (1, value)

        set_status, status_value = flag(status_message_id)
        set_seq, seq_value = flag(posted_seq)
        set_result, result_value = flag(result_message_id)
        set_token, token_value = flag(interaction_token)
        async with self.db.write() as tx:
            row = await tx.one(
                Q.UPDATE_POST,
                {
                    "job": job_id,
                    "now": self.clock(),
                    "set_status": set_status,
                    "status_message": status_value,
                    "set_seq": set_seq,
                    "seq": seq_value,
                    "set_result": set_result,
                    "result_message": result_value,
                    "set_token": set_token,
                    "token": token_value,
                },
            )
        if row is None:
            raise _no_job(job_id)
        return JobPost.from_row(row)

    async def job_update(self, job_id: int) -> JobUpdate | None:
        """One job with its post and result (None when the job or its post is gone)."""
        async with self.db.read() as tx:
            found = await self._updates(tx, [job_id])
        return found[0] if found else None

    async def _updates(self, tx: Tx, ids: list[int]) -> list[JobUpdate]:
        wanted = json.dumps(ids)
        jobs = {row["id"]: Job.from_row(row) for row in await tx.all(Q.GET_JOBS, (wanted,))}
        posts = {row["job_id"]: JobPost.from_row(row) for row in await tx.all(Q.GET_POSTS, (wanted,))}
        results = {row["job_id"]: Result.from_row(row) for row in await tx.all(Q.GET_RESULTS, (wanted,))}
        return [JobUpdate(jobs[i], posts[i], results.get(i)) for i in ids if i in jobs and i in posts]

    async def pending_updates(self, after_seq: int = 0, *, limit: int = 50) -> list[JobUpdate]:
        """Jobs with a post whose status/progress changed since last shown (``posted_seq < update_seq``), oldest
        change first, with their result when finished. After a restart call it with ``after_seq=0``; while running,
        pass the largest ``job.update_seq`` seen to skip what is already being handled."""
        async with self.db.read() as tx:
            ids = [row[0] for row in await tx.all(Q.PENDING_UPDATES, {"after": after_seq, "limit": limit})]
            if not ids:
                return []
            return await self._updates(tx, ids)

    async def check_quota(self, guild_id: int, owner_id: int) -> None:
        """``QuotaExceeded`` if one more job of ``owner_id`` would break a limit now (``enqueue`` checks again,
        atomically): lets callers refuse before storing anything."""
        async with self.db.read() as tx:
            row = await tx.one(Q.GET_GUILD, (guild_id,))
            guild = GuildSettings.from_json(None if row is None else row["settings"])
            await queue.check_quotas(
                tx, guild_id, owner_id, queue.effective_limits(self._queue_limits, guild), self.clock()
            )

    # ---------------------------------------------------------------- jobs: the worker's side
    async def claim(
        self,
        worker_id: str,
        *,
        kinds: Sequence[JobKind] | None = None,
        lease_seconds: float = 60.0,
        job_id: int | None = None,
    ) -> Job | None:
        """Take the next job atomically (never two workers for one job). Fair: highest priority first, then the
        guild and the user with the fewest running jobs and served longest ago. Expired leases are re-queued first
        (counting the attempt). With ``job_id``, that job only (the command line runs its own job at once). Returns
        None when nothing is ready."""
        job, marked = await queue.claim(
            self.db, worker_id, kinds=kinds, lease_seconds=lease_seconds, now=self.clock(), job_id=job_id
        )
        await self._finish_deletions(marked)
        return job

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
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay = poll_min
        while True:
            job = await self.claim(worker_id, kinds=kinds, lease_seconds=lease_seconds)
            if job is not None:
                return job
            if deadline is not None and loop.time() >= deadline:
                return None
            pause = delay if deadline is None else min(delay, max(0.0, deadline - loop.time()))
            await asyncio.sleep(pause)
            delay = min(poll_max, delay * 2)

    async def heartbeat(self, job_id: int, worker_id: str, *, lease_seconds: float = 60.0) -> Heartbeat:
        """Extend the lease. ``LeaseLost`` (a ``JobCancelled``) if this worker no longer holds the job."""
        try:
            return await queue.heartbeat(self.db, job_id, worker_id, lease_seconds, self.clock())
        except queue.LeaseLostError as exc:
            raise LeaseLost(exc.why, hint="Stop this job and claim the next one.") from None

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
        now = self.clock()
        last = self._progress_marks.get(job_id)
        if last is not None and not force:
            last_time, last_stage, _ = last
            if stage == last_stage and now - last_time < self.limits.progress_interval:
                return False
        last_preview = last[2] if last is not None else float("-inf")
        if preview is not None and not force and now - last_preview < self.limits.preview_interval:
            preview = None  # a preview every few seconds is plenty; the bot edits at most every 10-15 s
        async with self._staging(preview) as (staged,), self._held(job_id, worker_id) as tx:
            job = await queue.held_job(tx, job_id, worker_id)
            ref = None if staged is None else await files.commit_staged(tx, self.files, staged, now)
            await tx.run(
                Q.SET_PROGRESS,
                {
                    "id": job_id,
                    "stage": stage,
                    "percent": None if percent is None else max(0.0, min(100.0, float(percent))),
                    "message": message,
                    "now": now,
                    "preview": None if ref is None else ref.digest,
                    "preview_size": None if ref is None else ref.size,
                },
            )
            marked = await files.release(tx, [_digest(job.progress.preview)] if ref is not None else [], now)
        self._progress_marks[job_id] = (now, stage, now if ref is not None else last_preview)
        await self._finish_deletions(marked)
        return True

    async def save_checkpoint(
        self, job_id: int, worker_id: str, state: Mapping[str, Any], *, checkpoint: Source | None = None
    ) -> None:
        """Store the resume point (and optionally a file, e.g. a training checkpoint) so a job re-claimed after a
        crash continues from there (``job.state`` / ``job.checkpoint``)."""
        body = json.dumps(dict(state))
        async with self._staging(checkpoint) as (staged,), self._held(job_id, worker_id) as tx:
            now = self.clock()
            job = await queue.held_job(tx, job_id, worker_id)
            ref = None if staged is None else await files.commit_staged(tx, self.files, staged, now)
            await tx.run(
                Q.SET_CHECKPOINT,
                {
                    "id": job_id,
                    "state": body,
                    "checkpoint": None if ref is None else ref.digest,
                    "checkpoint_size": None if ref is None else ref.size,
                },
            )
            marked = await files.release(tx, [_digest(job.checkpoint)] if ref is not None else [], now)
        await self._finish_deletions(marked)

    async def complete(
        self,
        job_id: int,
        worker_id: str,
        *,
        video: Source | None = None,
        comparison: Source | None = None,
        report: Mapping[str, Any] | None = None,
        expires_in: float | None = None,
    ) -> Job:
        """Finish the job successfully; its result (if any files or report) expires after ``result_days``, or after
        ``expires_in`` seconds when that is sooner (a "which face?" question keeps the raw clip only that long)."""
        async with (
            self._staging(video, comparison) as (staged_video, staged_cmp),
            self._held(job_id, worker_id) as tx,
        ):
            now = self.clock()
            job = await queue.held_job(tx, job_id, worker_id)
            video_ref = (
                None if staged_video is None else await files.commit_staged(tx, self.files, staged_video, now)
            )
            cmp_ref = (
                None if staged_cmp is None else await files.commit_staged(tx, self.files, staged_cmp, now)
            )
            if video_ref is not None or cmp_ref is not None or report is not None:
                guild = GuildSettings.from_json((await tx.row(Q.GET_GUILD, (job.guild_id,)))["settings"])
                await tx.run(
                    Q.INSERT_RESULT,
                    {
                        "job": job.id,
                        "guild": job.guild_id,
                        "owner": job.owner_id,
                        "video": None if video_ref is None else video_ref.digest,
                        "video_size": None if video_ref is None else video_ref.size,
                        "comparison": None if cmp_ref is None else cmp_ref.digest,
                        "comparison_size": None if cmp_ref is None else cmp_ref.size,
                        "report": json.dumps(dict(report or {})),
                        "visibility": guild.result_visibility.value,
                        "now": now,
                        "expires": now + min(self.limits.result_days * DAY, expires_in or float("inf")),
                    },
                )
            marked = await queue.finish(tx, job.id, JobStatus.SUCCEEDED, now)
            done = await queue.get_job(tx, job.id)
        self._progress_marks.pop(job_id, None)
        await self._finish_deletions(marked)
        return done

    async def fail(self, job_id: int, worker_id: str, error: str, *, retry: bool = True) -> Job:
        """Record a failure (``error`` is shown to the user). With ``retry`` and attempts left, the job is queued
        again after an exponential backoff; otherwise it is failed for good."""
        async with self._held(job_id, worker_id) as tx:
            now = self.clock()
            job = await queue.held_job(tx, job_id, worker_id)
            marked: list[str] = []
            if job.cancel_requested:
                marked = await queue.finish(tx, job.id, JobStatus.CANCELLED, now)
            elif retry and job.attempts < job.max_attempts:
                delay = queue.retry_delay(
                    job.attempts, self.limits.retry_base_seconds, self.limits.retry_max_seconds
                )
                await tx.run(Q.RETRY_JOB, {"id": job.id, "error": error, "run_after": now + delay})
            else:
                marked = await queue.finish(tx, job.id, JobStatus.FAILED, now, error)
            done = await queue.get_job(tx, job.id)
        self._progress_marks.pop(job_id, None)
        await self._finish_deletions(marked)
        return done

    async def release(self, job_id: int, worker_id: str) -> Job:
        """Hand a running job back to the queue now (the worker is shutting down after saving a checkpoint);
        the attempt is not counted. A job whose cancel was requested is cancelled instead."""
        async with self._held(job_id, worker_id) as tx:
            now = self.clock()
            job = await queue.held_job(tx, job_id, worker_id)
            marked: list[str] = []
            if job.cancel_requested:
                marked = await queue.finish(tx, job.id, JobStatus.CANCELLED, now, "Cancelled.")
            else:
                await tx.run(Q.RELEASE_JOB, {"id": job.id, "now": now})
            done = await queue.get_job(tx, job.id)
        self._progress_marks.pop(job_id, None)
        await self._finish_deletions(marked)
        return done

    async def finish_cancelled(self, job_id: int, worker_id: str) -> Job:
        """The worker stopped a job after seeing ``cancel_requested``."""
        async with self._held(job_id, worker_id) as tx:
            now = self.clock()
            await queue.held_job(tx, job_id, worker_id)
            marked = await queue.finish(tx, job_id, JobStatus.CANCELLED, now, "Cancelled.")
            done = await queue.get_job(tx, job_id)
        self._progress_marks.pop(job_id, None)
        await self._finish_deletions(marked)
        return done

    async def stalled_jobs(self) -> list[Job]:
        """Running jobs whose lease has expired (their worker died); ``claim`` re-queues them."""
        return [Job.from_row(row) for row in await self.db.all(Q.STALLED_JOBS, (self.clock(),))]

    # ---------------------------------------------------------------- forgetting and retention
    async def forget_identity(
        self, guild_id: int, identity_id: int, by_user_id: int, *, is_admin: bool = False
    ) -> ForgetReport:
        """Erase an identity: uploads, face set, thumbnail, decoder, grants, and every job and result that used it.
        Allowed to its owner, its subject, or a guild admin."""
        identity = await self.get_identity(guild_id, identity_id)
        if by_user_id not in (identity.owner_id, identity.subject_user_id) and not is_admin:
            raise NotAllowed(
                f"Only {_mention(identity.owner_id)}, who enrolled {identity.display_name}, the person themselves, "
                "or a server admin can forget them.",
                hint=f"Ask {_mention(identity.owner_id)}.",
            )
        return await forget.forget_identities(self.db, self.files, [identity.id], self.clock())

    async def forget_user(self, user_id: int, *, guild_id: int | None = None) -> ForgetReport:
        """Erase everything of a user (in one guild, or everywhere): identities they own or are the subject of,
        their jobs, results and grants."""
        return await forget.forget_user(self.db, self.files, user_id, guild_id, self.clock())

    async def forget_guild(self, guild_id: int) -> ForgetReport:
        """Erase a whole guild (admin purge, or the grace period after the bot was removed)."""
        return await forget.forget_guild(self.db, self.files, guild_id, self.clock())

    async def schedule_guild_deletion(self, guild_id: int, after_days: float | None = None) -> Guild:
        """The bot left the guild: erase its data after ``after_days`` (default ``guild_grace_days``)."""
        days = self.limits.guild_grace_days if after_days is None else after_days
        now = self.clock()
        async with self.db.write() as tx:
            await tx.run(Q.ENSURE_GUILD, (guild_id, now))
            row = await tx.row(Q.SET_GUILD_DELETION, (now + days * DAY, guild_id))
        return Guild.from_row(row)

    async def cancel_guild_deletion(self, guild_id: int) -> Guild:
        """The bot is back in the guild before the grace period ended."""
        async with self.db.write() as tx:
            await tx.run(Q.ENSURE_GUILD, (guild_id, self.clock()))
            row = await tx.row(Q.SET_GUILD_DELETION, (None, guild_id))
        return Guild.from_row(row)

    async def run_due_deletions(self) -> list[int]:
        """Erase guilds whose grace period is over; returns their ids."""
        due = [row[0] for row in await self.db.all(Q.DUE_GUILDS, (self.clock(),))]
        for guild_id in due:
            report = await self.forget_guild(guild_id)
            log.info("erased guild %s after its grace period: %s", guild_id, report)
        return due

    async def discard_result(self, guild_id: int, job_id: int, user_id: int) -> None:
        """Delete a job's result now (rows and files), e.g. the clip a "which face?" question kept, once answered.
        Only its owner may; ``NotFound`` when there is none."""
        result = await self.get_result(guild_id, job_id, user_id)
        if user_id != result.owner_id:
            raise NotAllowed(f"Only {_mention(result.owner_id)} can delete the result of job #{job_id}.")
        await forget.discard_results(self.db, self.files, [job_id], self.clock())

    async def expire_results(self) -> int:
        """Delete results (rows and files) past ``expires_at``; returns how many."""
        return await forget.expire_results(self.db, self.files, self.clock(), self.limits.result_days * DAY)

    async def maintenance(self, *, orphan_age_seconds: float = 3600.0) -> SweepReport:
        """Finish interrupted deletions, then remove files without rows and temp files older than
        ``orphan_age_seconds`` (younger ones may belong to another process writing right now)."""
        finished = await files.finish_deletions(self.db, self.files)
        orphans, temp, blobs = await files.sweep_orphans(
            self.db, self.files, min_age=orphan_age_seconds, now=self.clock()
        )
        dirs = 0
        if self.jobs_dir.is_dir():
            names = [int(p.name) for p in self.jobs_dir.iterdir() if p.is_dir() and p.name.isdigit()]
            rows = await self.db.all(Q.JOB_STATUS_AMONG, (json.dumps(names),))
            dirs = forget.sweep_job_dirs(self.jobs_dir, {row[0]: JobStatus(row[1]) for row in rows})
        return SweepReport(
            deletions_finished=finished,
            orphan_files=orphans,
            temp_files=temp,
            orphan_blobs=blobs,
            job_dirs=dirs,
        )
