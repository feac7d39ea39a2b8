"""The command line's runs of the same jobs, through storage in its local guild: ``enroll_local``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from common.config import Settings
from common.errors import NotFound
from storage import JobKind, UploadKind, open_storage
from swap_engine.media import sniff_kind
from worker.loop import Worker


@dataclass
class EnrollOutcome:
    lines: list[str]
    summary: str
    kept: int


async def enroll_local(settings: Settings, guild_id: int, user_id: int, name: str, paths: list[Path]) -> EnrollOutcome:
    """Store the inputs for ``name`` (created if new), run the prepare job here, and report per input."""

    files = [f for p in paths for f in ([p] if not p.is_dir() else sorted(x for x in p.rglob("*") if x.is_file()))]
    lines: list[str] = []
    usable: list[tuple[Path, UploadKind]] = []
    for f in files:
        if not f.is_file():
            lines.append(f"{f}: rejected — no such file")
            continue
        kind = sniff_kind(f)
        if kind is None:
            lines.append(f"{f.name}: rejected — not a photo or video famswap can read")
        elif f.stat().st_size > settings.max_upload_bytes:
            lines.append(f"{f.name}: rejected — larger than {settings.max_upload_mb:g} MB")
        else:
            usable.append((f, UploadKind.IMAGE if kind == "image" else UploadKind.VIDEO))
    if not usable:
        return EnrollOutcome(lines, f"Nothing enrolled: no usable photo or video for {name}.", 0)
    async with open_storage(settings) as store:
        created = False
        try:
            identity = await store.find_identity(guild_id, user_id, name)
        except NotFound:
            identity = await store.create_identity(guild_id, user_id, name)
            created = True
        for f, kind in usable:
            await store.add_upload(guild_id, identity.id, user_id, f, kind=kind, filename=f.name)
        job = await store.enqueue(guild_id, user_id, JobKind.PREPARE, {}, identity_ids=[identity.id],
                                  enforce_quota=False, max_attempts=1)
        worker = Worker(settings, "cpu", worker_id=f"cli-{os.getpid()}")
        claimed = await store.claim(worker.worker_id, kinds=[JobKind.PREPARE])
        while claimed is not None and claimed.id != job.id:  # run anything queued before it too
            await worker.run_job(store, claimed)
            claimed = await store.claim(worker.worker_id, kinds=[JobKind.PREPARE])
        if claimed is not None:
            await worker.run_job(store, claimed)
        done = await store.get_job(job.id)
        if done.status.value != "succeeded":
            if created:
                await store.forget_identity(guild_id, identity.id, user_id)
            return EnrollOutcome(lines + [f"{f.name}: rejected" for f, _ in usable],
                                 f"Nothing enrolled: {done.error or 'no usable face found'}", 0)
        result = await store.get_result(guild_id, job.id, user_id)
    report = result.report
    return EnrollOutcome(lines + list(report.get("lines", [])), f"{name}: {report.get('summary', '')}",
                         int(report.get("faces", 0)))

