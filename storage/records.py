"""Frozen records returned by the storage API: one dataclass per table row, built with ``from_row``, plus the enums."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, overload

from storage.jobs import JobKind as JobKind  # re-exported: records and their enums in one place
from storage.jobs import JobSpec, job_from_json


class JobStatus(StrEnum):
    """Where a job is in its life. ``queued`` and ``running`` are live; the other three are final."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class IdentityStatus(StrEnum):
    EMPTY = "empty"  # no usable face yet
    PREPARING = "preparing"  # a prepare job is building the face set
    READY = "ready"  # a face set exists; swaps may use it


class UploadKind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"


class UploadStatus(StrEnum):
    PENDING = "pending"  # stored, faces not extracted yet
    ACCEPTED = "accepted"  # faces from it are in the face set
    REJECTED = "rejected"  # no usable face; ``reason`` says why


class Visibility(StrEnum):
    """Who may fetch a result again: only its owner, or any member of the guild it was made in."""

    OWNER = "owner"
    GUILD = "guild"


@overload
def ts(value: float) -> datetime: ...
@overload
def ts(value: None) -> None: ...
@overload
def ts(value: float | None) -> datetime | None: ...
def ts(value: float | None) -> datetime | None:
    """Database timestamps are UNIX seconds (REAL); records carry aware UTC datetimes (a column that may be NULL
    gives ``None``; sqlite3 rows are untyped, so the first overload is the one a NOT NULL column meets)."""
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _json(text: str | None) -> Any:
    return {} if not text else json.loads(text)


@dataclass(frozen=True)
class BlobRef:
    """A file in the encrypted store: ``digest`` is the keyed hash (HMAC-SHA256) of the plaintext, ``size`` its bytes."""

    digest: str
    size: int

    @classmethod
    def maybe(cls, digest: str | None, size: int | None) -> BlobRef | None:
        return None if digest is None else cls(digest, size or 0)


@dataclass(frozen=True)
class GuildSettings:
    """Per-guild settings an admin can change (stored as JSON). ``None`` quotas mean "the host's default"."""

    allowed_channel_ids: tuple[int, ...] = ()  # empty: every channel
    allowed_role_ids: tuple[int, ...] = ()  # empty: every member
    max_queued_per_user: int | None = None
    max_queued_per_guild: int | None = None
    daily_jobs_per_user: int | None = None
    daily_jobs_per_guild: int | None = None  # None: no guild-wide daily cap
    result_visibility: Visibility = Visibility.GUILD
    # The "AI face swap" label is always drawn; these only place and word it.
    label_position: str = "bottom-right"
    label_text: str = "AI face swap"

    @classmethod
    def from_json(cls, text: str | None) -> GuildSettings:
        data = _json(text)
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for key in ("allowed_channel_ids", "allowed_role_ids"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        if "result_visibility" in values:
            values["result_visibility"] = Visibility(values["result_visibility"])
        return cls(**values)

    def to_json(self) -> str:
        data = asdict(self)
        data["result_visibility"] = self.result_visibility.value
        return json.dumps(data, sort_keys=True)


@dataclass(frozen=True)
class Guild:
    id: int
    name: str
    settings: GuildSettings
    created_at: datetime
    deletion_due_at: datetime | None  # set when the bot left the guild: data is erased after the grace period

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Guild:
        return cls(
            id=row["id"],
            name=row["name"],
            settings=GuildSettings.from_json(row["settings"]),
            created_at=ts(row["created_at"]),
            deletion_due_at=ts(row["deletion_due_at"]),
        )


@dataclass(frozen=True)
class User:
    id: int
    name: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> User:
        return cls(id=row["id"], name=row["name"], created_at=ts(row["created_at"]))


@dataclass(frozen=True)
class Identity:
    """An enrolled person, scoped to one guild. ``on_behalf`` identities record who confirmed consent, and when."""

    id: int
    guild_id: int
    owner_id: int
    display_name: str
    subject_user_id: (
        int | None
    )  # the Discord member whose face it is, when known (the owner for self-enrollment)
    on_behalf: bool
    consent_confirmed_by: int | None
    consent_confirmed_at: datetime | None
    status: IdentityStatus
    faceset: BlobRef | None  # archive of the aligned crops + faceset.json, written by the worker
    thumbnail: BlobRef | None  # grid of the kept faces, shown by /identities and /enroll
    face_count: int
    summary: dict[str, Any]  # per-upload outcome, quality figures, rejection reasons (JSON from the worker)
    faceset_version: int  # bumped by every new face set, so a bank knows when a decoder is stale
    created_at: datetime
    updated_at: datetime

    @property
    def engine_id(self) -> str:
        """The key of this identity's decoder in a ``FaceBank`` (engine ids are strings)."""
        return str(self.id)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Identity:
        return cls(
            id=row["id"],
            guild_id=row["guild_id"],
            owner_id=row["owner_id"],
            display_name=row["display_name"],
            subject_user_id=row["subject_user_id"],
            on_behalf=bool(row["on_behalf"]),
            consent_confirmed_by=row["consent_confirmed_by"],
            consent_confirmed_at=ts(row["consent_confirmed_at"]),
            status=IdentityStatus(row["status"]),
            faceset=BlobRef.maybe(row["faceset_digest"], row["faceset_size"]),
            thumbnail=BlobRef.maybe(row["thumbnail_digest"], row["thumbnail_size"]),
            face_count=row["face_count"],
            summary=_json(row["summary"]),
            faceset_version=row["faceset_version"],
            created_at=ts(row["created_at"]),
            updated_at=ts(row["updated_at"]),
        )


@dataclass(frozen=True)
class Grant:
    """Permission to swap with an identity: for one member, or for the whole guild when ``user_id`` is None."""

    identity_id: int
    guild_id: int
    user_id: int | None
    granted_by: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Grant:
        return cls(
            identity_id=row["identity_id"],
            guild_id=row["guild_id"],
            user_id=row["user_id"]
            or None,  # 0 stands for "everyone" in the table (NULLs are never equal in UNIQUE)
            granted_by=row["granted_by"],
            created_at=ts(row["created_at"]),
        )


@dataclass(frozen=True)
class Upload:
    """A photo or video given for an identity. ``blob`` is None once the raw file was dropped (retention)."""

    id: int
    guild_id: int
    identity_id: int
    owner_id: int
    content_digest: str  # keyed hash of the plaintext: dedupe without revealing the photo
    blob: BlobRef | None
    kind: UploadKind
    filename: str
    size: int
    status: UploadStatus
    reason: str | None  # why it was rejected, in words a user can act on
    faces_found: int
    quality: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Upload:
        return cls(
            id=row["id"],
            guild_id=row["guild_id"],
            identity_id=row["identity_id"],
            owner_id=row["owner_id"],
            content_digest=row["content_digest"],
            blob=BlobRef.maybe(row["blob_digest"], row["size"]),
            kind=UploadKind(row["kind"]),
            filename=row["filename"],
            size=row["size"],
            status=UploadStatus(row["status"]),
            reason=row["reason"],
            faces_found=row["faces_found"],
            quality=_json(row["quality"]),
            created_at=ts(row["created_at"]),
        )


@dataclass(frozen=True)
class Bank:
    """A guild's face bank: one shared encoder checkpoint plus one decoder checkpoint per identity.

    Decoders are separate files so that forgetting an identity deletes its decoder without retraining anyone else.
    ``version`` increases with every save (optimistic concurrency between workers).
    """

    guild_id: int
    version: int
    encoder: BlobRef | None
    decoders: Mapping[int, BlobRef]  # identity id -> decoder checkpoint
    decoder_versions: Mapping[int, int]  # identity id -> faceset_version the decoder was trained on
    config: dict[str, Any]  # the engine's ModelConfig and anything else the worker wants beside the weights
    updated_at: datetime
    trained_steps: Mapping[int, int] = field(default_factory=dict)  # identity id -> steps trained, all jobs together
    trained_seconds: Mapping[int, float] = field(default_factory=dict)


# A decoder that has trained this many steps (warming and swaps together) is "warm": a swap with it trains
# FAMSWAP_WARM_SWAP_SHARE of the usual budget. 2000 steps is what benchmarks/warm_bank.py warmed the measured bank
# with (lite, three people: 32 minutes of the shared 2-core CPU; docs/QUALITY.md, "Warm bank").
WARM_READY_STEPS = 2000


@dataclass(frozen=True)
class Warmth:
    """How warm one identity's decoder is: steps and seconds trained, and whether the guild's bank is warming now."""

    steps: int
    seconds: float
    warming: bool  # a warm job of the guild is running
    plateau: bool  # warming stopped at a loss plateau with these people and face sets: more would not help

    @property
    def ready(self) -> bool:
        return self.steps >= WARM_READY_STEPS

    def text(self) -> str:
        """One line for /identities and `famswap identities`."""
        if self.steps == 0:
            trained = "not trained yet"
        else:
            trained = f"trained {self.steps:,} steps ({self.seconds / 60:.0f} min)"
        state = "warming now" if self.warming else ("warm" if self.ready or self.plateau else "cold")
        extra = ", at its plateau" if self.plateau and not self.warming else ""
        return f"{state}: {trained}{extra}"


@dataclass(frozen=True)
class Progress:
    stage: str | None
    percent: float | None
    message: str | None
    preview: BlobRef | None
    updated_at: datetime | None


@dataclass(frozen=True)
class Job:
    id: int
    guild_id: int
    owner_id: int
    kind: JobKind
    payload: JobSpec  # the typed job of ``kind`` (storage.jobs)
    priority: int
    status: JobStatus
    identity_ids: tuple[int, ...]
    input: BlobRef | None  # e.g. the clip of a swap job
    attempts: int
    max_attempts: int
    run_after: datetime  # not claimed before (retry backoff)
    worker_id: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    state: dict[str, Any]  # the worker's resume point (last finished stage, step, …)
    checkpoint: BlobRef | None  # an encrypted file saved with ``state`` (e.g. training checkpoint)
    progress: Progress
    error: str | None  # last failure, in words a user can read
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    update_seq: int  # increases whenever the status or progress changes (what the bot polls)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        ids = row["identity_ids"]
        return cls(
            id=row["id"],
            guild_id=row["guild_id"],
            owner_id=row["owner_id"],
            kind=JobKind(row["kind"]),
            payload=job_from_json(row["kind"], row["payload"]),
            priority=row["priority"],
            status=JobStatus(row["status"]),
            identity_ids=tuple(sorted(int(i) for i in ids.split(","))) if ids else (),
            input=BlobRef.maybe(row["input_digest"], row["input_size"]),
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            run_after=ts(row["run_after"]),
            worker_id=row["worker_id"],
            lease_expires_at=ts(row["lease_expires_at"]),
            cancel_requested=bool(row["cancel_requested"]),
            state=_json(row["state"]),
            checkpoint=BlobRef.maybe(row["checkpoint_digest"], row["checkpoint_size"]),
            progress=Progress(
                stage=row["stage"],
                percent=row["percent"],
                message=row["message"],
                preview=BlobRef.maybe(row["preview_digest"], row["preview_size"]),
                updated_at=ts(row["progress_at"]),
            ),
            error=row["error"],
            created_at=ts(row["created_at"]),
            started_at=ts(row["started_at"]),
            finished_at=ts(row["finished_at"]),
            update_seq=row["update_seq"],
        )


@dataclass(frozen=True)
class Result:
    """What a finished job produced. Files expire at ``expires_at`` (``FAMSWAP_RESULT_DAYS``)."""

    job_id: int
    guild_id: int
    owner_id: int
    video: BlobRef | None
    comparison: BlobRef | None  # before/after GIF
    report: dict[str, Any]
    visibility: Visibility
    created_at: datetime
    expires_at: datetime

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Result:
        return cls(
            job_id=row["job_id"],
            guild_id=row["guild_id"],
            owner_id=row["owner_id"],
            video=BlobRef.maybe(row["video_digest"], row["video_size"]),
            comparison=BlobRef.maybe(row["comparison_digest"], row["comparison_size"]),
            report=_json(row["report"]),
            visibility=Visibility(row["visibility"]),
            created_at=ts(row["created_at"]),
            expires_at=ts(row["expires_at"]),
        )


@dataclass(frozen=True)
class JobPost:
    """The bot's Discord bookkeeping for one job, so status messages survive a bot restart."""

    job_id: int
    guild_id: int
    channel_id: int
    status_message_id: int | None
    status_message_at: datetime | None  # when the status message was posted (edits stop working after 1 h)
    request_message_id: int | None
    interaction_id: int | None
    interaction_token: str | None  # valid 15 min; cleared when the job ends
    posted_seq: int  # the job's update_seq last shown in Discord
    posted_at: datetime | None
    result_message_id: int | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobPost:
        return cls(
            job_id=row["job_id"],
            guild_id=row["guild_id"],
            channel_id=row["channel_id"],
            status_message_id=row["status_message_id"],
            status_message_at=ts(row["status_message_at"]),
            request_message_id=row["request_message_id"],
            interaction_id=row["interaction_id"],
            interaction_token=row["interaction_token"],
            posted_seq=row["posted_seq"],
            posted_at=ts(row["posted_at"]),
            result_message_id=row["result_message_id"],
        )


@dataclass(frozen=True)
class JobUpdate:
    """A job whose status or progress changed since the bot last showed it."""

    job: Job
    post: JobPost
    result: Result | None


@dataclass(frozen=True)
class QueuePosition:
    job_id: int
    status: JobStatus
    position: int  # 1 = next to be claimed; 0 when running or finished
    ahead: int  # jobs expected to start before this one
    workers: int  # workers holding a live lease now (at least 1 is assumed for the ETA)
    eta_seconds: float | None  # until the job is expected to finish; None without any history


@dataclass(frozen=True)
class Heartbeat:
    """A worker's lease, renewed. ``cancel_requested``: stop, clean up and call ``finish_cancelled``."""

    cancel_requested: bool
    lease_expires_at: datetime


@dataclass(frozen=True)
class SweepReport:
    """What the start-up maintenance pass cleaned up."""

    deletions_finished: int = 0  # files whose deletion a crash had interrupted
    orphan_files: int = 0  # files with no database row
    temp_files: int = 0  # half-written temp files
    orphan_blobs: int = 0  # blob rows nothing refers to any more
    job_dirs: int = 0  # temp folders of jobs that are no longer running
    extra: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ForgetReport:
    """What one erase removed (rows) and how many stored files went with it."""

    identities: int = 0
    uploads: int = 0
    jobs: int = 0
    results: int = 0
    files: int = 0
    running_jobs_stopped: int = (
        0  # running jobs whose rows were removed: their worker stops at its next heartbeat
    )
