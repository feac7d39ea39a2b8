"""How long a queued swap waits for a worker that is warming a bank: the issue's "starts within 5 s".

A real worker (the CPU default model, ``lite``) warms the bank of a guild with two people enrolled from photos; each
round, once warming is under way, a swap is queued and the time until a worker holds it is printed, with what the
hand-back did in between (a poll, the step in progress, the bank and the checkpoint saved to storage). After the
swap, warming resumes by itself; the next round waits for it.

    nice .venv/bin/python benchmarks/bench_warm_preempt.py [--rounds 3] [--home /tmp/famswap-preempt]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.config import Settings  # noqa: E402
from storage import Job, JobKind, JobStatus, Storage, UploadKind, WarmJob, open_storage  # noqa: E402
from worker.loop import Worker  # noqa: E402

SHARED = Path(os.environ.get("FAMSWAP_SHARED_DIR", REPO.parent / "shared"))
GUILD, OWNER = 1, 11


async def until(store: Storage, job_id: int, ready: object, timeout: float = 600.0) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = await store.get_job(job_id)
        if ready(job):  # type: ignore[operator]
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} did not get there in {timeout:g} s: {job.status.value}")
        await asyncio.sleep(0.05)


def step_of(job: Job) -> int:
    found = re.search(r"step (\d+)", job.progress.message or "")
    return int(found.group(1)) if found else -1


async def main(rounds: int, home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
    settings = Settings.load({
        "FAMSWAP_HOME": str(home), "FAMSWAP_KEY_FILE": str(home / "key"), "FAMSWAP_MODEL": "lite",
        "FAMSWAP_DEVICE": "cpu", "FAMSWAP_MODEL_DIR": os.environ.get("FAMSWAP_MODEL_DIR", str(SHARED / "models")),
        "FAMSWAP_WARM_MINUTES_PER_DAY": "600",
    }, env_file=home / "no.env")
    worker = Worker(settings, "cpu", worker_id="bench")
    async with open_storage(settings) as store:
        for name, photo in (("Anna", "obama.jpg"), ("Ben", "biden.jpg")):
            person = await store.create_identity(GUILD, OWNER, name)
            await store.add_upload(GUILD, person.id, OWNER, SHARED / "media" / "photos" / photo,
                                   kind=UploadKind.IMAGE, filename=photo)
            await store.enqueue(GUILD, OWNER, JobKind.PREPARE, {}, identity_ids=[person.id])
        await worker.run(once=True)
        people = await store.list_identities(GUILD, OWNER)
        warm = await store.enqueue_warm(GUILD, WarmJob(steps=10**9))
        assert warm is not None
        task = asyncio.create_task(worker.run())
        waits = []
        try:
            for n in range(rounds):
                job = await until(store, warm.id, lambda j: j.status is JobStatus.RUNNING and step_of(j) >= 0)
                step = step_of(job)
                queued = time.monotonic()
                swap = await store.enqueue(GUILD, OWNER, JobKind.SWAP,
                                           {"train_steps": 1, "clip_name": "tiny.mp4", "ask": False},
                                           identity_ids=[people[0].id],
                                           input=SHARED / "media" / "clips" / "tiny_man_noaudio.mp4")
                await until(store, swap.id, lambda j: j.status is not JobStatus.QUEUED)
                waits.append(time.monotonic() - queued)
                print(f"round {n + 1}: warming at step {step}; the queued swap was taken {waits[-1]:.2f} s later "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
                await until(store, swap.id, lambda j: j.status.is_final)
        finally:
            worker.request_stop()
            await task
    print(f"\nswap queued → claimed while warming (lite, CPU, {rounds} rounds): "
          f"max {max(waits):.2f} s, mean {sum(waits) / len(waits):.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--home", type=Path, default=Path("/tmp/famswap-preempt"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    asyncio.run(main(args.rounds, args.home))
