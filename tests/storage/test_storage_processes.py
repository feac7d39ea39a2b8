"""The queue across real worker processes (multiprocessing, spawn): no double claims, SIGKILL recovery, cancel."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import storage_testkit as kit

from common.config import Settings
from storage import JobKind, JobStatus, open_storage

SPAWN = multiprocessing.get_context("spawn")


def _start(target: Callable[..., None], *args: object) -> multiprocessing.Process:
    process = SPAWN.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def _wait_file(path: Path, process: multiprocessing.Process, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.is_alive(), f"worker exited with {process.exitcode}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    time.sleep(0.05)
    return path.read_text()


async def test_two_worker_processes_run_200_jobs_exactly_once(settings: Settings, tmp_path: Path) -> None:
    async with open_storage(settings, synchronous="NORMAL") as store:
        ids = [
            (await store.enqueue(1 + i % 3, 10 + i % 7, JobKind.SWAP, {"title": f"job {i}"}, enforce_quota=False)).id
            for i in range(200)
        ]
    go = tmp_path / "go"
    outs = [tmp_path / f"claimed-{n}.txt" for n in range(2)]
    workers = [
        _start(
            kit.drain_queue,
            str(settings.home),
            str(settings.key_path),
            f"worker-{n}",
            30.0,
            str(outs[n]),
            str(go),
        )
        for n in range(2)
    ]
    for out, process in zip(outs, workers, strict=True):  # both have the store open (spawn is slow on a busy box)
        _wait_file(Path(f"{out}.ready"), process, timeout=120)
    go.touch()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    claimed = [[int(line) for line in out.read_text().split()] for out in outs]
    assert all(claimed), f"one worker claimed nothing: {[len(c) for c in claimed]}"
    every = claimed[0] + claimed[1]
    assert sorted(every) == sorted(ids)  # each job claimed once, none lost
    async with open_storage(settings) as store:
        jobs = [await store.get_job(i) for i in ids]
    assert all(j.status is JobStatus.SUCCEEDED and j.attempts == 1 for j in jobs)
    assert {j.worker_id for j in jobs} == {"worker-0", "worker-1"}


async def test_a_sigkilled_worker_job_is_reclaimed_after_its_lease(
    settings: Settings, tmp_path: Path
) -> None:
    lease = 1.5
    async with open_storage(settings, synchronous="NORMAL") as store:
        job = await store.enqueue(1, 10, JobKind.SWAP, input=b"the clip")
        ready = tmp_path / "ready"
        victim = _start(
            kit.run_one_job_forever, str(settings.home), str(settings.key_path), "victim", lease, str(ready)
        )
        job_id, pid = (int(v) for v in _wait_file(ready, victim).split())
        assert job_id == job.id
        time.sleep(lease)  # it keeps its lease alive by heartbeating…
        assert await store.claim("rescuer") is None
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)  # …until it dies mid-job
        victim.join(10)
        again = None
        while again is None and time.monotonic() - killed_at < 10:
            again = await store.claim("rescuer", lease_seconds=30)
            await asyncio.sleep(0.1)
        assert again is not None and again.id == job.id
        assert time.monotonic() - killed_at <= lease + 2
        assert again.attempts == 2 and again.state == {"stage": "train", "step": 1234}
        assert await store.read_blob(again.input) == b"the clip"
        done = await store.complete(job.id, "rescuer", video=b"finished")
        assert done.status is JobStatus.SUCCEEDED


async def test_cancel_reaches_a_worker_process_within_seconds(settings: Settings, tmp_path: Path) -> None:
    async with open_storage(settings, synchronous="NORMAL") as store:
        job = await store.enqueue(1, 10, JobKind.SWAP)
        ready = tmp_path / "ready"
        worker = _start(kit.work_until_cancelled, str(settings.home), str(settings.key_path), "w", str(ready))
        _wait_file(ready, worker)
        asked_at = time.monotonic()
        await store.cancel_job(1, job.id, by_user_id=10)
        worker.join(10)
        assert worker.exitcode == 0
        assert time.monotonic() - asked_at < 3
        assert (await store.get_job(job.id)).status is JobStatus.CANCELLED


async def test_processes_starting_together_share_one_schema_and_one_key(
    settings: Settings, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    outs = [tmp_path / f"key-{n}" for n in range(3)]
    procs = [
        _start(kit.open_and_report, str(settings.home), str(settings.key_path), str(go), str(out))
        for out in outs
    ]
    time.sleep(0.3)
    go.touch()
    for process in procs:
        process.join(60)
        assert process.exitcode == 0
    assert len({out.read_text() for out in outs}) == 1
    async with open_storage(settings) as store:
        assert store.files.keys.key_id.hex() == outs[0].read_text()
        assert await store.db.scalar("SELECT count(*) FROM counters") == 2
