"""The worker's own checks on what users send: caps before decoding, uploads keyed by id, any file name."""

from __future__ import annotations

import time
from pathlib import Path

from famswap.config import Settings
from storage import JobKind, JobStatus, UploadKind, UploadStatus, open_storage
from tests.media_kit import make_clip
from tests.worker.conftest import Enrolled, Media
from tests.worker.workerkit import ALICE, GUILD, RecordingWorker

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
