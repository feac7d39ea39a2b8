"""The durable job queue: enqueue with quotas, fair atomic claims with leases, heartbeats, progress, retries, cancel.

Functions here take a ``Database`` (or an open ``Tx``) and plain values; ``storage.api.Storage`` wraps them with the
consent checks and the file store. Claiming is one ``UPDATE … RETURNING`` inside ``BEGIN IMMEDIATE``: SQLite has one
writer at a time, so two worker processes can never take the same row (no ``SKIP LOCKED`` needed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.errors import QuotaExceeded
from storage import queries as Q
from storage.db import Database, Tx
from storage.files import release
from storage.jobs import JobSpec
from storage.records import GuildSettings, Heartbeat, Job, JobKind, JobStatus, QueuePosition, ts

DAY = 86400.0
WORKER_DIED = "The worker running this job stopped {n} times; giving up."


class LeaseLostError(Exception):
    """Internal: the job is not held by this worker any more (``storage.api.LeaseLost`` is what clients see)."""

    def __init__(self, job_id: int, why: str) -> None:
        super().__init__(why)
        self.job_id = job_id
        self.why = why


@dataclass(frozen=True)
class QueueLimits:
    max_queued_per_user: int
    max_queued_per_guild: int
    daily_jobs_per_user: int
    daily_jobs_per_guild: int | None
    max_queued_total: int | None = None  # host-wide, every guild together
    daily_jobs_total: int | None = None


def _lower(host: int | None, guild: int | None) -> int | None:
    if guild is None:
        return host
    return guild if host is None else min(host, guild)


def effective_limits(host: QueueLimits, guild: GuildSettings) -> QueueLimits:
    """The host's limits are ceilings: a guild's own quotas, where set, can only lower them."""
    return QueueLimits(
        max_queued_per_user=min(host.max_queued_per_user, guild.max_queued_per_user or host.max_queued_per_user),
        max_queued_per_guild=min(host.max_queued_per_guild, guild.max_queued_per_guild or host.max_queued_per_guild),
        daily_jobs_per_user=min(host.daily_jobs_per_user, guild.daily_jobs_per_user or host.daily_jobs_per_user),
        daily_jobs_per_guild=_lower(host.daily_jobs_per_guild, guild.daily_jobs_per_guild or None),
        max_queued_total=host.max_queued_total,
        daily_jobs_total=host.daily_jobs_total,
    )


def _in_words(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _quota_error(message: str, resets_at: float, now: float) -> QuotaExceeded:
    when = datetime.fromtimestamp(resets_at, UTC)
    err = QuotaExceeded(
        message,
        hint=f"It resets at {when:%Y-%m-%d %H:%M} UTC (in {_in_words(resets_at - now)}).",
    )
    err.resets_at = when  # type: ignore[attr-defined]  # the bot formats it as a Discord timestamp
    return err


async def check_quotas(tx: Tx, guild_id: int, owner_id: int, limits: QueueLimits, now: float) -> None:
    """``QuotaExceeded`` if one more job would break a limit; the message says which and when it resets."""
    live = await tx.scalar(Q.COUNT_LIVE_JOBS_OF_USER, (owner_id, guild_id))
    if live >= limits.max_queued_per_user:
        raise QuotaExceeded(
            f"You already have {live} jobs waiting or running here (the limit is {limits.max_queued_per_user}).",
            hint="It frees up as soon as one of them finishes; /status shows them and /cancel stops one.",
        )
    guild_live = await tx.scalar(Q.COUNT_LIVE_JOBS_OF_GUILD, (guild_id,))
    if guild_live >= limits.max_queued_per_guild:
        raise QuotaExceeded(
            f"This server already has {guild_live} jobs waiting or running "
            f"(the limit is {limits.max_queued_per_guild}).",
            hint="It frees up as soon as one of them finishes; try again in a few minutes.",
        )
    row = await tx.row(Q.DAILY_JOBS_OF_USER, (owner_id, guild_id, now - DAY))
    if row["n"] >= limits.daily_jobs_per_user:
        raise _quota_error(
            f"You have started {row['n']} jobs in the last 24 hours (the limit is {limits.daily_jobs_per_user}).",
            row["oldest"] + DAY,
            now,
        )
    if limits.max_queued_total is not None:
        total = await tx.scalar(Q.COUNT_LIVE_JOBS)
        if total >= limits.max_queued_total:
            raise QuotaExceeded(
                f"famswap is busy: {total} jobs are waiting or running (this host's limit is "
                f"{limits.max_queued_total}).",
                hint="Try again in a few minutes, when some of them have finished.",
            )
    if limits.daily_jobs_total is not None:
        row = await tx.row(Q.DAILY_JOBS, (now - DAY,))
        if row["n"] >= limits.daily_jobs_total:
            raise _quota_error(
                f"famswap has made {row['n']} jobs in the last 24 hours, this host's limit.",
                row["oldest"] + DAY,
                now,
            )
    if limits.daily_jobs_per_guild:
        row = await tx.row(Q.DAILY_JOBS_OF_GUILD, (guild_id, now - DAY))
        if row["n"] >= limits.daily_jobs_per_guild:
            raise _quota_error(
                f"This server has started {row['n']} jobs in the last 24 hours "
                f"(the limit is {limits.daily_jobs_per_guild}).",
                row["oldest"] + DAY,
                now,
            )


async def insert_job(
    tx: Tx,
    *,
    guild_id: int,
    owner_id: int,
    spec: JobSpec,
    identity_ids: Sequence[int],
    input_digest: str | None,
    input_size: int | None,
    priority: int,
    max_attempts: int,
    now: float,
) -> Job:
    ids = sorted(set(identity_ids))
    job_id = await tx.insert(
        Q.INSERT_JOB,
        {
            "guild": guild_id,
            "owner": owner_id,
            "kind": spec.kind.value,
            "payload": spec.to_json(),
            "priority": priority,
            "identity_ids": ",".join(str(i) for i in ids),
            "input": input_digest,
            "input_size": input_size,
            "max_attempts": max(1, max_attempts),
            "now": now,
        },
    )
    await tx.run_many(Q.INSERT_JOB_IDENTITY, [(job_id, i) for i in ids])
    return await get_job(tx, job_id)


async def get_job(tx: Tx, job_id: int) -> Job:
    row = await tx.one(Q.GET_JOB, (job_id,))
    if row is None:
        raise LookupError(job_id)
    return Job.from_row(row)


async def finish(tx: Tx, job_id: int, status: JobStatus, now: float, error: str | None = None) -> list[str]:
    """Put a job in a final state and let go of its clip, checkpoint and preview. Returns files marked for deletion
    (finish them after the commit)."""
    row = await tx.one(Q.JOB_FILES, (json.dumps([job_id]),))
    await tx.run(Q.FINISH_JOB, {"id": job_id, "status": status.value, "error": error, "now": now})
    return await release(tx, list(row) if row else [], now)


async def requeue_expired(tx: Tx, now: float) -> list[str]:
    """Re-queue running jobs whose lease ran out (or fail / cancel them); returns files to delete."""
    rows = await tx.all(Q.REQUEUE_EXPIRED, {"now": now})
    marked: list[str] = []
    for row in rows:
        status = JobStatus(row["status"])
        if status is JobStatus.FAILED:
            job = await get_job(tx, row["id"])
            marked += await finish(tx, job.id, status, now, WORKER_DIED.format(n=job.attempts))
        elif status is JobStatus.CANCELLED:
            marked += await finish(tx, row["id"], status, now)
    return marked


async def claim(
    db: Database,
    worker_id: str,
    *,
    kinds: Sequence[JobKind] | None,
    lease_seconds: float,
    now: float,
    job_id: int | None = None,
) -> tuple[Job | None, list[str]]:
    """Take the next job fairly and atomically (only ``job_id`` when given). Returns (job or None, files released
    by expired jobs)."""
    kinds_json = None if kinds is None else json.dumps([JobKind(k).value for k in kinds])
    async with db.write() as tx:
        marked = await requeue_expired(tx, now)
        row = await tx.one(
            Q.CLAIM_NEXT, {"worker": worker_id, "now": now, "lease": lease_seconds, "kinds": kinds_json, "job": job_id}
        )
        if row is None:
            return None, marked
        seq = await tx.scalar(Q.NEXT_SERVE_SEQ)
        await tx.run(Q.MARK_GUILD_SERVED, (seq, row["guild_id"]))
        await tx.run(Q.MARK_USER_SERVED, (seq, row["owner_id"]))
        return await get_job(tx, row["id"]), marked


async def held_job(tx: Tx, job_id: int, worker_id: str) -> Job:
    """The job if this worker holds it; ``LeaseLostError`` (saying why) otherwise."""
    row = await tx.one(Q.HELD_JOB, (job_id, worker_id))
    if row is not None:
        return Job.from_row(row)
    other = await tx.one(Q.GET_JOB, (job_id,))
    if other is None:
        raise LeaseLostError(job_id, f"Job {job_id} was erased (its data was forgotten).")
    status = JobStatus(other["status"])
    if status is JobStatus.RUNNING:
        raise LeaseLostError(
            job_id, f"Job {job_id} was taken over by another worker after this one's lease ran out."
        )
    raise LeaseLostError(job_id, f"Job {job_id} is {status.value}, no longer running on this worker.")


async def heartbeat(db: Database, job_id: int, worker_id: str, lease_seconds: float, now: float) -> Heartbeat:
    async with db.write() as tx:
        row = await tx.one(
            Q.HEARTBEAT, {"id": job_id, "worker": worker_id, "now": now, "lease": lease_seconds}
        )
        if row is None:
            await held_job(tx, job_id, worker_id)  # raises with the reason
            raise AssertionError("held_job returned for a job this worker does not hold")
        return Heartbeat(
            cancel_requested=bool(row["cancel_requested"]), lease_expires_at=ts(row["lease_expires_at"])
        )


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff: base, 2·base, 4·base … after the 1st, 2nd, 3rd failed attempt, at most ``cap``."""
    return min(cap, base * 2.0 ** max(0, attempts - 1))


def _order_key(
    job: dict[str, Any],
    guild_served: dict[int, int],
    user_served: dict[int, int],
    running_g: dict[int, int],
    running_u: dict[int, int],
) -> tuple[int, ...]:
    # Mirrors the ORDER BY of queries.CLAIM_NEXT.
    return (
        -job["priority"],
        running_g.get(job["guild_id"], 0),
        guild_served[job["guild_id"]],
        running_u.get(job["owner_id"], 0),
        user_served[job["owner_id"]],
        job["id"],
    )


async def queue_position(db: Database, job_id: int, now: float) -> QueuePosition:
    """Simulate the fair claim order over the current queue to place the job, then estimate from recent durations
    how long until it finishes (``None`` without history for a kind involved)."""
    async with db.read() as tx:
        row = await tx.one(Q.GET_JOB, (job_id,))
        if row is None:
            raise LookupError(job_id)
        job = Job.from_row(row)
        queued = [dict(r) for r in await tx.all(Q.QUEUED_FOR_ORDER)]
        running = [dict(r) for r in await tx.all(Q.RUNNING_FOR_ETA)]
        durations = {r["kind"]: r["seconds"] for r in await tx.all(Q.RECENT_DURATIONS)}
    live_workers = {r["worker_id"] for r in running if r["lease_expires_at"] and r["lease_expires_at"] >= now}
    workers = max(1, len(live_workers))

    def expected(kind: str) -> float | None:
        return durations.get(kind)

    if job.status is not JobStatus.QUEUED:
        remaining = None
        took = expected(job.kind.value)
        if job.status is JobStatus.RUNNING and took is not None and job.started_at:
            remaining = max(0.0, took - (now - job.started_at.timestamp()))
        elif job.status.is_final:
            remaining = 0.0
        return QueuePosition(job.id, job.status, 0, 0, workers, remaining)

    guild_served = {r["guild_id"]: r["guild_served"] for r in queued}
    user_served = {r["owner_id"]: r["user_served"] for r in queued}
    running_g: dict[int, int] = {}
    running_u: dict[int, int] = {}
    for r in running:
        running_g[r["guild_id"]] = running_g.get(r["guild_id"], 0) + 1
        running_u[r["owner_id"]] = running_u.get(r["owner_id"], 0) + 1
    pending = list(queued)
    ahead: list[dict[str, Any]] = []
    tick = max([0, *guild_served.values(), *user_served.values()])
    while pending:
        pick = min(pending, key=lambda j: _order_key(j, guild_served, user_served, running_g, running_u))
        if pick["id"] == job.id:
            break
        ahead.append(pick)
        pending.remove(pick)
        tick += 1
        guild_served[pick["guild_id"]] = tick
        user_served[pick["owner_id"]] = tick

    # Without a recent duration for any kind involved there is no estimate.
    left = [expected(r["kind"]) for r in running]
    before = [expected(j["kind"]) for j in ahead]
    own = expected(job.kind.value)
    eta: float | None = None
    if own is not None and None not in left and None not in before:
        busy = sum(max(0.0, s - (now - (r["started_at"] or now))) for s, r in zip(left, running, strict=True) if s)
        eta = (busy + sum(s for s in before if s)) / workers + own
    return QueuePosition(job.id, job.status, len(ahead) + 1, len(ahead), workers, eta)
