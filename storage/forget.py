"""Erasing people and guilds, and retention: rows and files, crash-safe and safe to run again.

Every erase is one write transaction that deletes the rows and, in the same transaction, marks the files nothing
refers to any more in ``pending_deletions``; after the commit the files are unlinked and the marks dropped
(``files.finish_deletions``). A crash after the commit leaves marks that the start-up pass finishes; a crash before
it leaves everything as it was. Either way no row points at a deleted file.

A running job whose rows are erased is stopped by its worker's next heartbeat (``LeaseLost``), and the result it
might still try to store is refused.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from storage import queries as Q
from storage.db import Database, Tx
from storage.files import FileStore, finish_deletions, release
from storage.records import ForgetReport, JobStatus


@dataclass
class Erased:
    """What one erase removed so far (mutable while the transaction runs)."""

    identities: int = 0
    uploads: int = 0
    jobs: int = 0
    results: int = 0
    running: int = 0
    files: list[str] = field(default_factory=list)  # digests whose rows were removed (released at the end)

    def report(self, files_deleted: int) -> ForgetReport:
        return ForgetReport(
            identities=self.identities,
            uploads=self.uploads,
            jobs=self.jobs,
            results=self.results,
            files=files_deleted,
            running_jobs_stopped=self.running,
        )


def _ids(values: Iterable[int]) -> str:
    return json.dumps(sorted(set(values)))


async def erase_jobs(tx: Tx, job_ids: Iterable[int], out: Erased) -> None:
    """Delete jobs with their results, posts and identity links; collect their files."""
    ids = _ids(job_ids)
    if ids == "[]":
        return
    for row in await tx.all(Q.RESULT_FILES, (ids,)):
        out.files += [row[0], row[1]]
    out.results += await tx.run(Q.DELETE_RESULTS, (ids,))
    for row in await tx.all(Q.JOB_FILES, (ids,)):
        out.files += list(row)
    out.running += await tx.scalar(Q.COUNT_RUNNING_AMONG, (ids,))
    out.jobs += await tx.run(Q.DELETE_JOBS, (ids,))  # job_identities and job_posts go by ON DELETE CASCADE


async def erase_identities(tx: Tx, identity_ids: Iterable[int], out: Erased) -> None:
    """Delete identities and everything made from them: uploads, face set, thumbnail, decoder, grants, and every
    job (anyone's) that used them, with its result — a swapped clip shows the face too."""
    ids = _ids(identity_ids)
    if ids == "[]":
        return
    jobs = [row[0] for row in await tx.all(Q.JOBS_USING_IDENTITIES, (ids,))]
    await erase_jobs(tx, jobs, out)
    out.files += [row[0] for row in await tx.all(Q.UPLOAD_FILES_OF_IDENTITIES, (ids,))]
    out.uploads += await tx.run(Q.DELETE_UPLOADS_OF_IDENTITIES, (ids,))
    out.files += [row[0] for row in await tx.all(Q.DECODER_FILES_OF_IDENTITIES, (ids,))]
    await tx.run(Q.DELETE_DECODERS_OF_IDENTITIES, (ids,))
    await tx.run(Q.FORGET_IDENTITIES_IN_WARM_RUNS, (ids,))
    for row in await tx.all(Q.IDENTITY_FILES, (ids,)):
        out.files += [row[0], row[1]]
    out.identities += await tx.run(Q.DELETE_IDENTITIES, (ids,))  # grants go by ON DELETE CASCADE


async def _commit_erase(
    db: Database, store: FileStore, tx_work: Callable[[Tx, Erased], Awaitable[None]], now: float
) -> ForgetReport:
    out = Erased()
    async with db.write() as tx:
        await tx_work(tx, out)
        marked = await release(tx, out.files, now)
    deleted = await finish_deletions(db, store, marked)
    return out.report(deleted)


async def forget_identities(
    db: Database, store: FileStore, identity_ids: list[int], now: float
) -> ForgetReport:
    async def work(tx: Tx, out: Erased) -> None:
        await erase_identities(tx, identity_ids, out)

    return await _commit_erase(db, store, work, now)


async def forget_user(
    db: Database, store: FileStore, user_id: int, guild_id: int | None, now: float
) -> ForgetReport:
    """Everything of one user (in one guild, or everywhere): identities they own or are the subject of, their jobs
    and results, grants to them, the consent records they signed, and their user row once nothing else is left."""

    async def work(tx: Tx, out: Erased) -> None:
        params = {"user": user_id, "guild": guild_id}
        identities = [row[0] for row in await tx.all(Q.IDENTITY_IDS_OF_USER, params)]
        await erase_identities(tx, identities, out)
        await erase_jobs(tx, [row[0] for row in await tx.all(Q.JOB_IDS_OF_USER, params)], out)
        await tx.run(Q.DELETE_GRANTS_TO_USER, params)
        if guild_id is None:
            await tx.run(Q.CLEAR_CONSENT_BY, (user_id,))
        await tx.run(Q.DELETE_IDLE_USERS, (json.dumps([user_id]),))

    return await _commit_erase(db, store, work, now)


async def forget_guild(db: Database, store: FileStore, guild_id: int, now: float) -> ForgetReport:
    """A whole guild: identities, uploads, bank (encoder and decoders), jobs, results, grants, settings; and the rows
    of users who have nothing left anywhere."""

    async def work(tx: Tx, out: Erased) -> None:
        users = [row[0] for row in await tx.all(Q.USERS_OF_GUILD, (guild_id, guild_id))]
        await erase_identities(
            tx, [row[0] for row in await tx.all(Q.IDENTITY_IDS_OF_GUILD, (guild_id,))], out
        )
        await erase_jobs(tx, [row[0] for row in await tx.all(Q.JOB_IDS_OF_GUILD, (guild_id,))], out)
        out.files += [row[0] for row in await tx.all(Q.DECODER_FILES_OF_GUILD, (guild_id,))]
        await tx.run(Q.DELETE_DECODERS_OF_GUILD, (guild_id,))
        out.files += [row[0] for row in await tx.all(Q.DELETE_BANK, (guild_id,))]
        await tx.run(Q.DELETE_WARM_RUNS_OF_GUILD, (guild_id,))
        await tx.run(Q.DELETE_GUILD, (guild_id,))
        await tx.run(Q.DELETE_IDLE_USERS, (json.dumps(users),))

    return await _commit_erase(db, store, work, now)


async def discard_results(db: Database, store: FileStore, job_ids: list[int], now: float) -> int:
    """Delete these jobs' results (rows and files) now; returns how many there were."""
    out = Erased()
    async with db.write() as tx:
        ids = _ids(job_ids)
        for row in await tx.all(Q.RESULT_FILES, (ids,)):
            out.files += [row[0], row[1]]
        out.results = await tx.run(Q.DELETE_RESULTS, (ids,))
        marked = await release(tx, out.files, now)
    await finish_deletions(db, store, marked)
    return out.results


async def expire_results(db: Database, store: FileStore, now: float, history_seconds: float) -> int:
    """Delete results past their expiry (rows and files), and finished jobs older than ``history_seconds`` that
    have no result left. Returns how many results expired."""
    out = Erased()
    async with db.write() as tx:
        expired = [row[0] for row in await tx.all(Q.EXPIRED_RESULTS, (now,))]
        ids = _ids(expired)
        for row in await tx.all(Q.RESULT_FILES, (ids,)):
            out.files += [row[0], row[1]]
        out.results = await tx.run(Q.DELETE_RESULTS, (ids,))
        old = [row[0] for row in await tx.all(Q.OLD_FINISHED_JOBS, (now - history_seconds,))]
        await erase_jobs(tx, old, out)
        marked = await release(tx, out.files, now)
    await finish_deletions(db, store, marked)
    return len(expired)


def sweep_job_dirs(jobs_dir: Path, statuses: dict[int, JobStatus]) -> int:
    """Remove temp folders (``jobs/<job id>/``, one subfolder per attempt) of jobs that are over or gone. Folders of
    queued and running jobs stay: a worker may be working in one of their attempt folders."""
    removed = 0
    if not jobs_dir.is_dir():
        return 0
    for path in jobs_dir.iterdir():
        if not path.is_dir() or not path.name.isdigit():
            continue
        status = statuses.get(int(path.name))
        if status is None or status.is_final:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
