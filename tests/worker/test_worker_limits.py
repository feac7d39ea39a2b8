"""The worker's own checks on what users send: caps before decoding, uploads keyed by id, any file name."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from common.config import Settings
from storage import JobKind, JobStatus, UploadKind, UploadStatus, open_storage
from tests.media_kit import make_clip
from tests.worker.conftest import Enrolled, Media
from tests.worker.workerkit import ALICE, GUILD, RecordingWorker
from worker import loop as worker_module

LONG_NAME = "顔" * 96 + ".jpg"  # 100 characters, 292 bytes: more than a file name may have on most file systems


async def test_an_enrollment_video_over_the_pixel_cap_is_refused_before_decoding(
    fresh_settings: Settings, media: Media, tmp_path: Path
) -> None:
    big = make_clip(tmp_path / "big.mp4", size=(4096, 4096), fps=10, frames=3)
    worker = RecordingWorker(fresh_settings)
    async with open_storage(fresh_settings, synchronous="NORMAL") as store:
        alice = await store.create_identity(GUILD, ALICE, "Alice")
        await store.add_upload(GUILD, alice.id, ALICE, big, kind=UploadKind.VIDEO, filename="huge.mp4")
        await store.add_upload(GUILD, alice.id, ALICE, media.alice_photo, kind=UploadKind.IMAGE, filename="me.jpg")
        job = await store.enqueue(GUILD, ALICE, JobKind.PREPARE, {}, identity_ids=[alice.id])
        started = time.monotonic()
        await worker.drain()
        took = time.monotonic() - started
        done = await store.get_job(job.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        verdicts = {u.filename: u for u in await store.list_uploads(GUILD, alice.id)}
    assert verdicts["huge.mp4"].status is UploadStatus.REJECTED
    assert "huge.mp4 is 4096x4096, more than the 2,073,600 pixels allowed" in (verdicts["huge.mp4"].reason or "")
    assert verdicts["me.jpg"].status is UploadStatus.ACCEPTED
    assert took < 120, f"{took:.0f} s"  # generous for a busy machine: a decoded 4096² video would take far longer
    assert worker.leftovers == []


async def test_two_uploads_with_the_same_name_are_each_judged(fresh_settings: Settings, media: Media, photos: Path) -> None:
    worker = RecordingWorker(fresh_settings)
    async with open_storage(fresh_settings, synchronous="NORMAL") as store:
        alice = await store.create_identity(GUILD, ALICE, "Alice")
        await store.add_upload(GUILD, alice.id, ALICE, media.alice_photo, kind=UploadKind.IMAGE, filename="image.jpg")
        await store.add_upload(GUILD, alice.id, ALICE, photos / "dog_no_human_face.jpg", kind=UploadKind.IMAGE,
                               filename="image.jpg")  # fmt: skip
        job = await store.enqueue(GUILD, ALICE, JobKind.PREPARE, {}, identity_ids=[alice.id])
        await worker.drain()
        done = await store.get_job(job.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        uploads = sorted(await store.list_uploads(GUILD, alice.id), key=lambda u: u.id)
    assert [u.status for u in uploads] == [UploadStatus.ACCEPTED, UploadStatus.REJECTED]
    assert [u.blob for u in uploads] == [None, None], "both raw files are dropped once judged"
    assert worker.leftovers == []


async def test_a_long_non_ascii_file_name_is_no_problem(enrolled: Enrolled) -> None:
    worker = RecordingWorker(enrolled.settings)
    async with open_storage(enrolled.settings, synchronous="NORMAL") as store:
        await store.add_upload(GUILD, enrolled.alice, ALICE, enrolled.media.bob_photo, kind=UploadKind.IMAGE,
                               filename=LONG_NAME)  # fmt: skip
        prepare = await store.enqueue(GUILD, ALICE, JobKind.PREPARE, {}, identity_ids=[enrolled.alice])
        swap = await store.enqueue(
            GUILD, ALICE, JobKind.SWAP, {"train_seconds": 1, "clip_name": LONG_NAME[:-4] + ".mp4"},
            identity_ids=[enrolled.alice], input=enrolled.media.clip,
        )  # fmt: skip
        await worker.drain()
        for job_id in (prepare.id, swap.id):
            done = await store.get_job(job_id)
            assert done.status is JobStatus.SUCCEEDED and done.attempts == 1, done.error
    assert worker.leftovers == []


async def test_a_worker_whose_lease_expired_leaves_its_successors_folder_alone(
    fresh_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders: dict[str, Path] = {}
    first_running, first_may_end = threading.Event(), threading.Event()
    second_running, second_may_end = threading.Event(), threading.Event()

    def handler(ctx: worker_module.JobContext) -> worker_module.Outcome:
        folders[ctx.worker_id] = ctx.folder
        (ctx.folder / "work.bin").write_bytes(b"in progress")
        running, may_end = (first_running, first_may_end) if ctx.worker_id == "first" else (second_running, second_may_end)
        running.set()
        assert may_end.wait(120)
        return worker_module.Outcome(report={"by": ctx.worker_id})

    monkeypatch.setitem(worker_module.HANDLERS, JobKind.TRAIN, handler)
    first = RecordingWorker(fresh_settings, worker_id="first", heartbeat_s=3600.0)  # never renews its lease
    second = RecordingWorker(fresh_settings, worker_id="second")
    async with open_storage(fresh_settings, synchronous="NORMAL") as store:
        job = await store.enqueue(GUILD, ALICE, JobKind.TRAIN, {}, enforce_quota=False)
        claimed = await store.claim("first", lease_seconds=0.2)
        assert claimed is not None and claimed.id == job.id
        one = asyncio.create_task(first.run_job(store, claimed))
        assert await asyncio.to_thread(first_running.wait, 60)
        retaken = await store.wait_for_job("second", timeout=60)  # once the first lease has expired
        assert retaken is not None and retaken.id == job.id and retaken.attempts == 2
        two = asyncio.create_task(second.run_job(store, retaken))
        assert await asyncio.to_thread(second_running.wait, 60)

        first_may_end.set()  # the first worker ends (its lease is lost) and cleans up after itself
        await asyncio.wait_for(one, 60)
        assert not folders["first"].exists()
        assert (folders["second"] / "work.bin").read_bytes() == b"in progress", "the successor's folder is intact"

        second_may_end.set()
        await asyncio.wait_for(two, 60)
        done = await store.get_job(job.id)
        assert done.status is JobStatus.SUCCEEDED
        assert not (fresh_settings.jobs_dir / str(job.id)).exists()
