"""Helpers for the storage tests: a fake clock, schema snapshots, and worker functions run in spawned processes.

Worker functions live here (not in a test module) so ``multiprocessing`` with the spawn method can import them.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from common.config import Settings


class FakeClock:
    """A clock tests move by hand (leases, backoff, quotas and expiry read it instead of waiting)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def data_files(home: Path) -> list[Path]:
    """Every regular file under a data home (database files included)."""
    return sorted(p for p in home.rglob("*") if p.is_file())


def schema_snapshot(path: Path) -> dict[str, Any]:
    """The schema of a database in a form that ignores how it got there (column order and types, keys, indexes,
    triggers, views, seeded counters, user_version), for comparing a fresh install with a migrated one."""
    conn = sqlite3.connect(path)
    try:
        snapshot: dict[str, Any] = {"user_version": conn.execute("PRAGMA user_version").fetchone()[0]}
        objects = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).fetchall()
        for kind, name, table, sql in objects:
            if kind == "table":
                snapshot[f"table {name}"] = {
                    "columns": conn.execute(f"PRAGMA table_xinfo('{name}')").fetchall(),
                    "foreign_keys": sorted(conn.execute(f"PRAGMA foreign_key_list('{name}')").fetchall()),
                    "indexes": sorted(
                        (
                            row[1],
                            row[2],
                            row[3],
                            row[4],
                            conn.execute(f"PRAGMA index_xinfo('{row[1]}')").fetchall(),
                        )
                        for row in conn.execute(f"PRAGMA index_list('{name}')").fetchall()
                    ),
                    "checks": _checks(sql),
                }
            elif kind in ("trigger", "view"):
                snapshot[f"{kind} {name}"] = (table, " ".join(sql.split()))
        snapshot["counters"] = sorted(conn.execute("SELECT name FROM counters").fetchall())
        return snapshot
    finally:
        conn.close()


def _checks(sql: str) -> list[str]:
    # CHECK constraints are not reported by any pragma: compare their normalised text.
    text = " ".join(sql.split())
    found = []
    start = text.find("CHECK (")
    while start != -1:
        depth, i = 0, start + len("CHECK ")
        while i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
            if depth == 0:
                break
        found.append(text[start:i])
        start = text.find("CHECK (", i)
    return sorted(found)


# ------------------------------------------------------------------------------------------------ spawned workers
def _settings(home: str, key: str) -> Settings:
    return Settings(home=Path(home), key_file=Path(key))


def _wait_for(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)


def drain_queue(home: str, key: str, worker_id: str, lease: float, out_path: str, go_path: str) -> None:
    """Say ``out_path``.ready once the store is open; once ``go_path`` exists, claim and complete jobs (each "works"
    5 ms) until none is left; write each claimed id to ``out_path``."""

    async def main() -> None:
        from storage import open_storage

        async with open_storage(_settings(home, key), maintenance=False, synchronous="NORMAL") as store:
            Path(out_path + ".ready").touch()
            _wait_for(go_path)  # every worker is up before the first claim, so they really compete
            with open(out_path, "a", buffering=1) as out:
                idle = 0
                while idle < 20:
                    job = await store.claim(worker_id, lease_seconds=lease)
                    if job is None:
                        idle += 1
                        await asyncio.sleep(0.02)
                        continue
                    idle = 0
                    out.write(f"{job.id}\n")
                    await asyncio.sleep(0.005)  # a job takes a moment, so a worker that wakes later still finds work
                    await store.heartbeat(job.id, worker_id, lease_seconds=lease)
                    await store.complete(job.id, worker_id, report={"worker": worker_id})

    asyncio.run(main())


def run_one_job_forever(home: str, key: str, worker_id: str, lease: float, ready_path: str) -> None:
    """Claim one job, save a checkpoint, signal readiness, then 'work' (heartbeating) until killed."""

    async def main() -> None:
        from storage import open_storage

        async with open_storage(_settings(home, key), maintenance=False, synchronous="NORMAL") as store:
            job = None
            while job is None:
                job = await store.claim(worker_id, lease_seconds=lease)
                await asyncio.sleep(0.02)
            await store.save_checkpoint(job.id, worker_id, {"stage": "train", "step": 1234})
            Path(ready_path).write_text(f"{job.id} {os.getpid()}")
            while True:
                await store.heartbeat(job.id, worker_id, lease_seconds=lease)
                await asyncio.sleep(lease / 4)

    asyncio.run(main())


def work_until_cancelled(home: str, key: str, worker_id: str, ready_path: str) -> None:
    """Claim one job and heartbeat every 0.2 s; on ``cancel_requested`` stop it and exit."""

    async def main() -> None:
        from storage import open_storage

        async with open_storage(_settings(home, key), maintenance=False, synchronous="NORMAL") as store:
            job = await store.wait_for_job(worker_id, lease_seconds=10, timeout=30)
            assert job is not None
            Path(ready_path).write_text(str(job.id))
            while not (await store.heartbeat(job.id, worker_id, lease_seconds=10)).cancel_requested:
                await asyncio.sleep(0.2)
            await store.finish_cancelled(job.id, worker_id)

    asyncio.run(main())


def open_and_report(home: str, key: str, go_path: str, out_path: str) -> None:
    """Open the storage (first start: creates the database and the key) and write the key id it ended up with."""

    async def main() -> None:
        from storage import open_storage

        _wait_for(go_path)
        async with open_storage(_settings(home, key), synchronous="NORMAL") as store:
            Path(out_path).write_text(store.files.keys.key_id.hex())

    asyncio.run(main())
