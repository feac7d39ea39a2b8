"""Job-queue throughput: enqueue, claim and complete operations per second with 1 and 4 worker processes.

    .venv/bin/python benchmarks/bench_queue.py [--jobs 2000] [--workers 1 4] [--synchronous FULL]

Each run uses a fresh data home in a temp folder. Phase 1: the worker processes enqueue ``--jobs`` jobs between them
(spread over 5 guilds and 40 users, so the fair ordering has work to do). Phase 2: the same processes claim and
complete until the queue is empty. Figures are wall-clock operations per second across all processes, plus the mean
time one call takes inside a process. Processes are started with ``spawn``, as the worker will be.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.config import Settings

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: import the checkout's packages
    sys.path.insert(0, str(REPO))


def _settings(home: Path) -> Settings:  # famswap and storage are imported lazily, after the path fix
    from common.config import Settings

    return Settings(home=home, key_file=home.parent / "bench.key")


def _worker(home: str, index: int, share: int, synchronous: str, barrier, results) -> None:
    """Enqueue ``share`` jobs, wait for everyone, then claim+complete until nothing is left."""
    from storage import JobKind, open_storage

    async def main() -> None:
        async with open_storage(_settings(Path(home)), maintenance=False, synchronous=synchronous) as store:
            worker = f"bench-{index}"
            barrier.wait()
            start = time.perf_counter()
            for i in range(share):
                n = index * share + i
                await store.enqueue(1 + n % 5, 100 + n % 40, JobKind.SWAP, {"n": n}, enforce_quota=False)
            enqueue_time = time.perf_counter() - start
            barrier.wait()
            claim_time = complete_time = 0.0
            done = empty = 0
            last_done = time.monotonic()
            while empty < 3:
                t0 = time.perf_counter()
                job = await store.claim(worker, lease_seconds=60)
                t1 = time.perf_counter()
                claim_time += t1 - t0
                if job is None:
                    empty += 1
                    await asyncio.sleep(0.01)
                    continue
                await store.complete(job.id, worker)
                complete_time += time.perf_counter() - t1
                done += 1
                last_done = time.monotonic()  # system-wide clock: comparable across processes
            results.put((index, share, enqueue_time, done, claim_time, complete_time, last_done))

    asyncio.run(main())


def run(jobs: int, workers: int, synchronous: str) -> dict[str, float]:
    from storage.db import open_database

    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="famswap-bench-") as tmp:
        home = Path(tmp) / "home"
        asyncio.run(_create(home))
        barrier = ctx.Barrier(workers + 1)
        results = ctx.Queue()
        share = jobs // workers
        procs = [
            ctx.Process(target=_worker, args=(str(home), i, share, synchronous, barrier, results))
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        barrier.wait()  # all open: enqueue starts
        t0 = time.monotonic()
        barrier.wait()  # all enqueued: draining starts
        t1 = time.monotonic()
        rows = [results.get(timeout=600) for _ in procs]
        t2 = max(r[6] for r in rows)  # the last completion, not the idle polls after it
        for p in procs:
            p.join()

        async def check() -> int:
            async with open_database(home / "famswap.sqlite3") as db:
                return await db.scalar(
                    "SELECT count(*) FROM jobs WHERE status = 'succeeded' AND attempts = 1"
                )

        succeeded = asyncio.run(check())
    total = share * workers
    done = sum(r[3] for r in rows)
    assert done == total == succeeded, (done, total, succeeded)
    return {
        "enqueue_per_s": total / (t1 - t0),
        "claim_complete_per_s": total / (t2 - t1),
        "enqueue_ms": 1000 * sum(r[2] for r in rows) / total,
        "claim_ms": 1000 * sum(r[4] for r in rows) / total,
        "complete_ms": 1000 * sum(r[5] for r in rows) / total,
    }


async def _create(home: Path) -> None:
    from storage import open_storage

    async with open_storage(_settings(home), maintenance=False):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--synchronous", default="FULL", choices=("FULL", "NORMAL"))
    args = parser.parse_args()
    print(
        f"famswap queue benchmark: {args.jobs} jobs, synchronous={args.synchronous}, "
        f"{multiprocessing.cpu_count()} CPUs"
    )
    print(
        f"{'workers':>7} {'enqueue/s':>10} {'claim+complete/s':>17} {'enqueue ms':>11} {'claim ms':>9} "
        f"{'complete ms':>12}"
    )
    for workers in args.workers:
        r = run(args.jobs, workers, args.synchronous)
        print(
            f"{workers:>7} {r['enqueue_per_s']:>10.0f} {r['claim_complete_per_s']:>17.0f} {r['enqueue_ms']:>11.2f} "
            f"{r['claim_ms']:>9.2f} {r['complete_ms']:>12.2f}"
        )
    print(
        "claim+complete/s counts jobs (each one claim and one complete); ms are mean times per call in a process."
    )


if __name__ == "__main__":
    main()
