"""The command line's runs of the jobs the bot queues, through storage in a local guild and the worker's own
handlers: ``enroll_local`` (a prepare job) and ``swap_local`` (a swap job), so the command line and the worker share
one bank, one key scheme, the same labels, metadata and report."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import Settings
from common.errors import FamswapError, NoFaceFound, NotFound
from storage import (
    LOCAL_GUILD,
    LOCAL_USER,
    Job,
    JobStatus,
    PrepareJob,
    Storage,
    SwapJob,
    UploadKind,
    WarmJob,
    open_storage,
)
from swap_engine.media import sniff_kind
from worker.context import ProgressHook
from worker.loop import Worker

log = logging.getLogger("famswap.worker")


def local_limits(settings: Settings) -> Settings:
    """The command line's limits for the clip it swaps: its length and pixel size are the user's business on their
    own machine; the frame rate and the frame count (what costs time) stay capped as for the bot."""
    return dataclasses.replace(settings, max_clip_seconds=float("inf"), max_clip_pixels=1 << 62)


async def _run_here(store: Storage, worker: Worker, job_id: int) -> Job:
    """Run the queued job ``job_id`` in this process now; Ctrl-C stops it at its next safe point (checkpointed) and
    cancels it. Returns the job as it ended."""
    claimed = await store.claim(worker.worker_id, job_id=job_id)
    if claimed is None:
        raise FamswapError(f"Job #{job_id} could not be started here.", hint="Run the command again.")
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, worker.request_stop)
    try:
        await worker.run_job(store, claimed)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    done = await store.get_job(job_id)
    if worker.stopping.is_set():
        if not done.status.is_final:  # handed back at a checkpoint: nobody else should pick it up
            with contextlib.suppress(FamswapError):
                await store.cancel_job(done.guild_id, job_id, done.owner_id)
        raise KeyboardInterrupt
    return done


@dataclass(frozen=True)
class SwapOutcome:
    """A finished local swap: the video, the before/after GIF next to it, and the worker's report."""

    video: Path
    comparison: Path | None
    report: dict[str, Any]


async def swap_local(settings: Settings, clip: Path, people: list[tuple[str, int | None]], spec: SwapJob, out: Path,
                     *, device: str | None = None, on_progress: ProgressHook | None = None) -> SwapOutcome:
    """Swap the enrolled ``people`` (name, face of the clip 0-based or None) into ``clip`` as one swap job run here;
    writes ``out`` (the video), ``OUT.compare.gif`` and ``OUT.json`` (the report, as the bot's worker stores it). The
    result is not kept in storage: the files written are the only copy."""
    async with open_storage(settings) as store:
        found = []
        for name, _ in people:
            person = await store.find_identity(LOCAL_GUILD, LOCAL_USER, name)
            if person.faceset is None:
                raise NoFaceFound(f"{person.display_name} has no faces yet.", hint="Run `famswap enroll` first.")
            found.append(person)
        (first, *others), faces = found, [face for _, face in people]
        spec = dataclasses.replace(
            spec, identity_id=first.id, identity_name=first.display_name, track=faces[0],
            also_identity_ids=[p.id for p in others], also_identity_names=[p.display_name for p in others],
            also_faces=faces[1:],
        )  # fmt: skip
        job = await store.enqueue(LOCAL_GUILD, LOCAL_USER, spec, identity_ids=[p.id for p in found], input=clip,
                                  enforce_quota=False, max_attempts=1)
        worker = Worker(local_limits(settings), device, worker_id=f"cli-{os.getpid()}", on_progress=on_progress)
        done = await _run_here(store, worker, job.id)
        if done.status is not JobStatus.SUCCEEDED:
            raise FamswapError(done.error or "The swap stopped without saying why.")
        result = await store.get_result(LOCAL_GUILD, job.id, LOCAL_USER)
        try:
            if result.video is None:
                raise FamswapError("The swap finished without a video.")
            out.parent.mkdir(parents=True, exist_ok=True)
            partial = out.with_name(out.name + ".part")
            (await store.decrypt_to(result.video, partial)).replace(out)
            gif = None
            if result.comparison is not None:
                gif = out.with_name(out.stem + ".compare.gif")
                await store.decrypt_to(result.comparison, gif)
            report = {**result.report, "comparison": None if gif is None else str(gif)}
            out.with_name(out.stem + ".json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        finally:
            await store.discard_result(LOCAL_GUILD, job.id, LOCAL_USER)
    return SwapOutcome(out, gif, report)


async def warm_local(settings: Settings, *, minutes: float | None = None, steps: int | None = None,
                     device: str | None = None, on_progress: ProgressHook | None = None) -> dict[str, Any]:
    """Warm the local guild's bank here now (`famswap train`): a warm job of every enrolled person, run in this
    process; returns its report. It ends at a plateau, after ``minutes`` / ``steps``, or (neither given) when
    today's allowance is used up."""
    async with open_storage(settings) as store:
        job = await store.enqueue_warm(LOCAL_GUILD, WarmJob(title="famswap train", minutes=minutes, steps=steps))
        if job is None:
            return {"kind": "warm", "steps": 0, "stopped": "nobody to warm"}
        worker = Worker(settings, device, worker_id=f"cli-{os.getpid()}", on_progress=on_progress)
        done = await _run_here(store, worker, job.id)
        if done.status is JobStatus.QUEUED:  # handed back: a job someone queued waits (a worker will resume this)
            return {"kind": "warm", "steps": done.state.get("steps_done", 0), "stopped": "handed back",
                    "seconds": done.state.get("seconds_done", 0.0)}
        if done.status is not JobStatus.SUCCEEDED:
            raise FamswapError(done.error or "Warming stopped without saying why.")
        result = await store.get_result(LOCAL_GUILD, job.id, LOCAL_USER)
        report = dict(result.report)
        await store.discard_result(LOCAL_GUILD, job.id, LOCAL_USER)
    return report


@dataclass(frozen=True)
class EnrollOutcome:
    """What ``enroll_local`` tells the user: a line per input, a summary, and how many faces were kept; ``question``
    when nothing was added because the new faces are not the person enrolled before (``add_anyway`` adds them)."""

    lines: list[str]
    summary: str
    kept: int
    question: str | None = None


async def enroll_local(settings: Settings, guild_id: int, user_id: int, name: str, paths: list[Path], *,
                       add_anyway: bool = False, on_progress: ProgressHook | None = None) -> EnrollOutcome:
    """Store the inputs for ``name`` (created if new), run the prepare job here, and report per input. New faces that
    are not the person enrolled before as ``name`` are added only with ``add_anyway`` (else they wait, pending)."""

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
        for f, upload_kind in usable:
            await store.add_upload(guild_id, identity.id, user_id, f, kind=upload_kind, filename=f.name)
        spec = PrepareJob(identity_id=identity.id, identity_name=identity.display_name, add_anyway=add_anyway)
        job = await store.enqueue(guild_id, user_id, spec, identity_ids=[identity.id],
                                  enforce_quota=False, max_attempts=1)
        worker = Worker(settings, "cpu", worker_id=f"cli-{os.getpid()}", on_progress=on_progress)
        done = await _run_here(store, worker, job.id)
        if done.status is not JobStatus.SUCCEEDED:
            if created:
                await store.forget_identity(guild_id, identity.id, user_id)
            return EnrollOutcome(lines + [f"{f.name}: rejected" for f, _ in usable],
                                 f"Nothing enrolled: {done.error or 'no usable face found'}", 0)
        result = await store.get_result(guild_id, job.id, user_id)
    report = result.report
    if report.get("needs_confirm"):
        question = str(report.get("message") or f"The new faces do not look like {name} as enrolled before.")
        return EnrollOutcome(lines + list(report.get("lines", [])), f"{name}: nothing added", 0, question)
    return EnrollOutcome(lines + list(report.get("lines", [])), f"{name}: {report.get('summary', '')}",
                         int(report.get("faces", 0)))

