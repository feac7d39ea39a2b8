"""The worker loop: claims jobs from storage and runs their handlers in a thread on one device; heartbeats, notices
a cancel within one heartbeat, hands a job back checkpointed on SIGTERM (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from common.config import Settings
from common.errors import FamswapError, JobCancelled
from storage import Job, JobKind, LeaseLost, Storage, open_storage
from swap_engine import pipeline
from worker.context import Interrupted, JobContext, Outcome, ProgressHook
from worker.prepare import run_prepare
from worker.swap import run_refit, run_swap
from worker.train import run_train
from worker.warm import Preempted, run_warm

log = logging.getLogger("famswap.worker")

HEARTBEAT_S = 2.0
LEASE_S = 60.0
RETENTION_EVERY_S = 3600.0  # expire results / erase servers past their grace period this often
WORK_POLL_S = 0.5  # a warming worker looks this often for a job waiting (the hand-back takes a step and a save)
WARM_CHECK_S = 15.0  # an idle worker looks this often for a bank to warm


HANDLERS: dict[JobKind, Callable[[JobContext], Outcome]] = {
    JobKind.PREPARE: run_prepare,
    JobKind.SWAP: run_swap,
    JobKind.TRAIN: run_train,
    JobKind.REFIT: run_refit,
    JobKind.WARM: run_warm,
}


# -----------------------------------------------------------------------------
# the loop


class Worker:
    """Claims jobs one at a time (per slot) and runs them; see the module docstring."""

    def __init__(self, settings: Settings, device: str | None = None, *, worker_id: str | None = None,
                 heartbeat_s: float = HEARTBEAT_S, lease_s: float = LEASE_S,
                 on_progress: ProgressHook | None = None) -> None:
        self.settings = settings
        self.on_progress = on_progress
        self.device = pipeline.resolve_device(device or settings.device)
        self.worker_id = worker_id or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        self.stopping = threading.Event()
        self.jobs_done = 0
        self._next_warm_check = 0.0
        pipeline.configure_torch(settings.torch_thread_count())

    def request_stop(self) -> None:
        """Finish no new job; checkpoint the running one and hand it back (SIGTERM does this)."""
        self.stopping.set()

    async def run(self, *, concurrency: int = 1, once: bool = False) -> int:
        async with open_storage(self.settings) as store:
            log.info("worker %s ready on %s", self.worker_id, self.device)
            await self._retention(store)
            retention = None if once else asyncio.create_task(self._retention_loop(store))
            try:
                await asyncio.gather(*(self._slot(store, once) for _ in range(max(1, concurrency))))
            finally:
                if retention is not None:
                    retention.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await retention
        return 0

    async def _retention(self, store: Storage) -> None:
        """Delete results older than FAMSWAP_RESULT_DAYS and erase the servers whose grace period after the bot was
        removed is over. Several workers may do it at once: each erase is one transaction."""
        try:
            expired = await store.expire_results()
            erased = await store.run_due_deletions()
        except Exception:  # noqa: BLE001 - jobs must not stop for it; the next pass retries
            log.warning("retention pass failed; it runs again in %.0f s", RETENTION_EVERY_S, exc_info=True)
            return
        if expired or erased:
            log.info("retention: %d result(s) expired; server(s) erased: %s", expired, erased or "none")

    async def _retention_loop(self, store: Storage) -> None:
        while True:
            await asyncio.sleep(RETENTION_EVERY_S)
            await self._retention(store)

    async def _slot(self, store: Storage, once: bool) -> None:
        # A worker that runs until stopped warms banks (FAMSWAP_WARM_MINUTES_PER_DAY > 0): after an enrollment,
        # and whenever nothing is queued. ``once`` (drain the queue and exit) never starts warming on its own.
        warm = not once and self.settings.warm_minutes_per_day > 0
        while not self.stopping.is_set():
            job = await store.wait_for_job(self.worker_id, lease_seconds=self.lease_s, timeout=0.5 if once else 1.0)
            if job is None:
                if once:
                    return
                if warm:
                    await self._warm_idle(store)
                continue
            await self.run_job(store, job)
            if warm and job.kind is JobKind.PREPARE:
                await _quietly(store.enqueue_warm(job.guild_id))

    async def _warm_idle(self, store: Storage) -> None:
        """Nothing queued: queue a warm job for the guild whose bank was warmed least today (if any may be)."""
        now = time.monotonic()
        if now < self._next_warm_check:
            return
        self._next_warm_check = now + WARM_CHECK_S
        try:
            guilds = await store.guilds_to_warm(self.settings.warm_minutes_per_day * 60.0)
            if guilds and await store.enqueue_warm(guilds[0]) is not None:
                log.info("nothing queued: warming the face bank of server %d", guilds[0])
        except Exception:  # noqa: BLE001 - warming is a bonus; the next idle check tries again
            log.warning("could not queue a warm job", exc_info=True)

    async def run_job(self, store: Storage, job: Job) -> None:
        loop = asyncio.get_running_loop()
        # One folder per attempt: should this worker's lease expire, the worker that takes the job over works in
        # a folder of its own, which this one's clean-up never touches.
        attempt = f"{job.attempts}-{uuid.uuid4().hex[:8]}"
        folder = store.job_dir(job.id, attempt)
        ctx = JobContext(store, job, self.worker_id, folder, loop, self.device, self.settings,
                         on_progress=self.on_progress)
        ctx.shutting_down = self.stopping
        log.info("job %d (%s) started on %s, attempt %d", job.id, job.kind.value, self.device, job.attempts)
        beat = asyncio.create_task(self._heartbeat(ctx))
        watch = asyncio.create_task(self._watch_for_work(ctx)) if job.kind is JobKind.WARM else None
        started = time.monotonic()
        try:
            outcome = await asyncio.to_thread(HANDLERS[job.kind], ctx)
            if ctx.cancelled.is_set():  # only a cancel stops a finished job: a shutdown now would waste all its work
                raise JobCancelled("The job was cancelled.")
            await store.complete(job.id, self.worker_id, video=outcome.video, comparison=outcome.comparison,
                                 report=outcome.report, expires_in=outcome.expires_in)
            log.info("job %d finished in %.0f s", job.id, time.monotonic() - started)
            self.jobs_done += 1
        except JobCancelled as exc:
            if isinstance(exc, LeaseLost):
                log.warning("job %d: %s", job.id, exc.message)
            else:
                log.info("job %d cancelled", job.id)
                await _quietly(store.finish_cancelled(job.id, self.worker_id))
        except Interrupted as exc:
            # The resume point is saved in storage: hand the job back so the next worker continues from it.
            if isinstance(exc, Preempted):
                log.info("job %d (warming) handed back after %.1f s: another job is waiting", job.id,
                         time.monotonic() - started)
            else:
                log.info("job %d interrupted by shutdown; it will resume from its checkpoint", job.id)
            await _quietly(store.release(job.id, self.worker_id))
        except FamswapError as exc:
            log.info("job %d failed: %s", job.id, exc.user_text())
            await _quietly(store.fail(job.id, self.worker_id, exc.user_text(), retry=False))
        except Exception:
            log.exception("job %d crashed", job.id)
            await _quietly(store.fail(
                job.id, self.worker_id, "Something went wrong on our side while making this; it will be retried.",
                retry=True,
            ))  # fmt: skip
        finally:
            beat.cancel()
            if watch is not None:
                watch.cancel()
            store.remove_job_dir(job.id, attempt)
            await _quietly(store.sweep_job_dir(job.id))  # a finished job's folders of dead attempts go too
            _free_device(self.device)

    async def _watch_for_work(self, ctx: JobContext) -> None:
        """While a warm job runs: as soon as another job waits, ask the warm job to hand itself back."""
        while not ctx.preempted.is_set():
            await asyncio.sleep(WORK_POLL_S)
            try:
                if await ctx.store.waiting_work():
                    log.info("job %d: another job is waiting; handing the warm job back", ctx.job.id)
                    ctx.preempted.set()
            except Exception:  # noqa: BLE001 - the next poll retries
                log.warning("job %d: could not look for waiting jobs", ctx.job.id, exc_info=True)

    async def _heartbeat(self, ctx: JobContext) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                beat = await ctx.store.heartbeat(ctx.job.id, self.worker_id, lease_seconds=self.lease_s)
            except LeaseLost:
                ctx.cancelled.set()
                return
            except Exception:  # noqa: BLE001 - a missed beat is retried; the lease has slack
                log.warning("job %d: heartbeat failed; retrying", ctx.job.id, exc_info=True)
                continue
            if beat.cancel_requested:
                ctx.cancelled.set()


async def _quietly(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        await coro
    except Exception:  # noqa: BLE001 - the lease may be gone already; the queue re-queues on expiry
        log.warning("could not record the job's end", exc_info=True)


def _free_device(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def run_worker(settings: Settings, *, device: str | None = None, concurrency: int = 1, once: bool = False) -> int:
    """`famswap worker`: run until SIGTERM/Ctrl-C (or, with ``once``, until the queue is empty)."""
    worker = Worker(settings, device)

    def stop(*_: object) -> None:
        log.info("stopping: checkpointing the running job")
        worker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return asyncio.run(worker.run(concurrency=concurrency, once=once))

