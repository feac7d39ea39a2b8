"""The warm bank on tiny media: a warming worker hands its job back when another job is queued and resumes it later
(the step count going on), stops at the daily allowance and at a loss plateau, never starts when it is off, and the
swap of a warm person trains the shorter budget. Waits are on job states with generous timeouts (the CI box is
busy); the hand-back time is printed, not asserted (benchmarks/bench_warm_preempt.py measures it)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.config import Settings
from storage import Job, JobKind, JobStatus, Storage, WarmJob, open_storage
from tests.worker.conftest import Enrolled
from tests.worker.workerkit import ALICE, GUILD, RecordingWorker, wait_job
from worker import loop as worker_loop
from worker import warm as warm_module

OTHER_GUILD = 2


def warm_on(settings: Settings, minutes: float = 60.0) -> Settings:
    return dataclasses.replace(settings, warm_minutes_per_day=minutes)


@contextlib.asynccontextmanager
async def running(worker: RecordingWorker) -> AsyncIterator[asyncio.Task[int]]:
    """The worker's loop (not ``once``: warming is for workers that stay up) until the block ends."""
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, timeout=300)


def trainer_step(message: str | None) -> int:
    found = re.search(r"step (\d+)", message or "")
    return int(found.group(1)) if found else -1


async def warming(store: Storage, job_id: int, *, after: int = 0, stale: str | None = None,
                  timeout: float = 180.0) -> int:
    """Wait until the warm job runs and reports a trainer step above ``after`` in a message other than ``stale``
    (a resumed job is claimed with its last run's progress still on it); returns that step."""
    job = await wait_job(store, job_id, lambda j: j.status is JobStatus.RUNNING and trainer_step(j.progress.message)
                         > after and j.progress.message != stale, timeout=timeout, what=f"warming past step {after}")
    return trainer_step(job.progress.message)


async def test_a_queued_job_takes_the_worker_from_warming_which_then_goes_on_where_it_stopped(
    enrolled: Enrolled,
) -> None:
    settings = warm_on(enrolled.settings)
    worker = RecordingWorker(settings)
    async with open_storage(settings, synchronous="NORMAL") as store, running(worker):
        warm = await store.enqueue_warm(GUILD, WarmJob(steps=1_000_000))
        assert warm is not None and warm.priority < 0 and warm.identity_ids == (enrolled.alice,)
        await warming(store, warm.id)
        queued_at = time.monotonic()
        refit = await store.enqueue(OTHER_GUILD, ALICE, JobKind.REFIT, {"refit_of": 1, "max_bytes": 500_000},
                                    input=enrolled.media.clip)
        await wait_job(store, refit.id, lambda j: j.status is not JobStatus.QUEUED, timeout=120, what="refit claim")
        print(f"queued refit claimed {time.monotonic() - queued_at:.1f} s after it was queued")
        handed = await store.get_job(warm.id)
        first = handed.state["steps_done"]
        assert handed.status is JobStatus.QUEUED and first >= 1
        bank = await store.get_bank(GUILD)  # what it trained is in the guild's bank, for the job that waited
        assert bank is not None and bank.trained_steps[enrolled.alice] == first
        await wait_job(store, refit.id, lambda j: j.status.is_final, timeout=120, what="refit end")
        await warming(store, warm.id, stale=handed.progress.message)
    resumed = await store_job(settings, warm.id)
    assert resumed.status is JobStatus.QUEUED  # the worker stopped: handed back again, to go on later
    assert resumed.state["steps_done"] > first  # the count goes on
    async with open_storage(settings, synchronous="NORMAL") as store:
        bank = await store.get_bank(GUILD)
        assert bank is not None and bank.trained_steps[enrolled.alice] == resumed.state["steps_done"]
        warmth = (await store.warmth(GUILD))[enrolled.alice]
    assert warmth.steps == resumed.state["steps_done"] and not warmth.warming and "cold: trained" in warmth.text()
    assert await run_kinds(settings) == ["handed back", "handed back"]
    assert worker.leftovers == []


async def test_a_swap_of_the_warming_guild_starts_from_the_warmed_bank_and_warming_goes_on_after_it(
    enrolled: Enrolled,
) -> None:
    settings = warm_on(enrolled.settings)
    worker = RecordingWorker(settings)
    async with open_storage(settings, synchronous="NORMAL") as store, running(worker):
        warm = await store.enqueue_warm(GUILD, WarmJob(steps=1_000_000))
        assert warm is not None
        await warming(store, warm.id)
        swap = await store.enqueue(GUILD, ALICE, JobKind.SWAP, {"train_seconds": 1, "clip_name": "man.mp4"},
                                   identity_ids=[enrolled.alice], input=enrolled.media.clip)
        await wait_job(store, swap.id, lambda j: j.status is not JobStatus.QUEUED, timeout=120, what="swap claim")
        handed = await store.get_job(warm.id)
        warmed = handed.state["steps_done"]
        assert handed.status is JobStatus.QUEUED and warmed >= 1
        done = await wait_job(store, swap.id, lambda j: j.status.is_final, timeout=300, what="swap end")
        assert done.status is JobStatus.SUCCEEDED, done.error
        bank = await store.get_bank(GUILD)
        assert bank is not None and bank.trained_steps[enrolled.alice] > warmed  # warming + the swap's steps
        # The swap saved the bank: warming goes on from it (a fresh optimizer), its job's count going on.
        await warming(store, warm.id, stale=handed.progress.message)
    again = await store_job(settings, warm.id)
    assert again.state["steps_done"] > warmed


async def test_warming_stops_at_the_daily_allowance_and_an_idle_worker_queues_it_once(
    enrolled: Enrolled, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_loop, "WARM_CHECK_S", 0.2)
    settings = warm_on(enrolled.settings, minutes=0.05)  # 3 s a day
    worker = RecordingWorker(settings)
    async with open_storage(settings, synchronous="NORMAL") as store:
        assert await store.guilds_to_warm(3.0) == [GUILD]
        async with running(worker):
            for _ in range(600):  # the idle worker queues a warm job by itself, which runs out its allowance
                kinds = await run_kinds(settings)
                if kinds:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.0)  # more idle checks: the allowance is spent, no other warm job
        assert await run_kinds(settings) == ["allowance"]
        used = await store.warm_seconds_used(GUILD)
        assert 3.0 <= used < 60.0
        assert await store.guilds_to_warm(3.0) == []
        assert await store.guilds_to_warm(used + 60.0) == [GUILD]  # a larger allowance has time left
        warm_jobs = [ran for ran in worker.ran if (await store.get_job(ran[0])).kind is JobKind.WARM]
        assert len(warm_jobs) == 1
        # A warm job queued anyway (after an enrollment) ends at once, training nothing.
        late = await store.enqueue_warm(GUILD)
        assert late is not None
        await RecordingWorker(settings).drain()
        result = await store.get_result(GUILD, late.id, 0)
        assert result.report["stopped"] == "allowance" and result.report["steps"] == 0


async def test_warming_stops_at_a_plateau_until_the_faces_change(
    enrolled: Enrolled, monkeypatch: pytest.MonkeyPatch
) -> None:
    import swap_engine.train as train

    monkeypatch.setattr(warm_module, "WARM_PLATEAU_STEPS", 3)
    real = train.TrainConfig
    # Asking for a 1000 % improvement makes every loss curve a plateau: stopped after the patience, deterministically.
    monkeypatch.setattr(train, "TrainConfig", lambda **kw: real(**{**kw, "plateau_min_delta": 10.0}))
    settings = warm_on(enrolled.settings)
    async with open_storage(settings, synchronous="NORMAL") as store:
        job = await store.enqueue_warm(GUILD)
        assert job is not None
        await RecordingWorker(settings).drain()
        result = await store.get_result(GUILD, job.id, 0)
        assert result.report["stopped"] == "plateau" and result.report["steps"] == 3
        assert await store.guilds_to_warm(3600.0) == []
        assert (await store.warmth(GUILD))[enrolled.alice].plateau
        alice = await store.get_identity(GUILD, enrolled.alice)
        assert alice.faceset is not None
        archive = await store.read_blob(alice.faceset)
        await store.set_faceset(GUILD, alice.id, archive, face_count=alice.face_count, summary={})  # new version
        assert await store.guilds_to_warm(3600.0) == [GUILD]
        assert not (await store.warmth(GUILD))[enrolled.alice].plateau


async def test_with_warming_off_an_idle_worker_never_warms(
    enrolled: Enrolled, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_loop, "WARM_CHECK_S", 0.1)
    settings = warm_on(enrolled.settings, minutes=0)
    worker = RecordingWorker(settings)
    async with open_storage(settings, synchronous="NORMAL") as store, running(worker):
        assert await store.guilds_to_warm(0) == []
        await asyncio.sleep(3.0)
    assert worker.ran == [] and await run_kinds(settings) == []


async def store_job(settings: Settings, job_id: int) -> Job:
    async with open_storage(settings, synchronous="NORMAL") as store:
        return await store.get_job(job_id)


async def run_kinds(settings: Settings) -> list[str]:
    """How each recorded stretch of warming stopped, oldest first."""
    async with open_storage(settings, synchronous="NORMAL") as store:
        return [row[0] for row in await store.db.all("SELECT stopped FROM warm_runs ORDER BY id")]


def test_a_warm_person_swaps_with_the_shorter_budget(tmp_path: Path) -> None:
    settings = Settings.load({"FAMSWAP_HOME": str(tmp_path), "FAMSWAP_WARM_SWAP_SHARE": "0.25"},
                             env_file=tmp_path / "no.env")
    assert settings.swap_train_seconds("cpu", None, warm=False) == settings.train_seconds("cpu") == 600.0
    assert settings.swap_train_seconds("cpu", None, warm=True) == 150.0
    assert settings.swap_train_seconds("cpu", "best", warm=True) == 450.0
