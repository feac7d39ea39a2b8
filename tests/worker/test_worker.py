"""The worker in this process on tiny media: real prepare and swap stages, the face choice, cancel, fair turns
between users, and failures a user can read. Every test also checks that each job's folder is gone afterwards."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from common.config import Settings
from common.errors import NotFound
from storage import IdentityStatus, JobKind, JobStatus, UploadKind, UploadStatus, open_storage
from swap_engine import pipeline
from tests.worker.conftest import Enrolled, Media
from tests.worker.workerkit import ALICE, BOB, CLIP_FRAMES, GUILD, RecordingWorker, count_frames, wait_job
from worker import loop as worker_module


async def test_prepare_then_swap_complete_through_the_real_stages(
    fresh_settings: Settings, media: Media, tmp_path: Path
) -> None:
    # No bank yet: the swap trains the lite model (FAMSWAP_MODEL=lite) from scratch; a 1 s budget is one step.
    worker = RecordingWorker(fresh_settings)
    async with open_storage(fresh_settings, synchronous="NORMAL") as store:
        alice = await store.create_identity(GUILD, ALICE, "Alice")
        await store.add_upload(GUILD, alice.id, ALICE, media.selfie, kind=UploadKind.VIDEO, filename="me.mp4")
        prepare = await store.enqueue(GUILD, ALICE, JobKind.PREPARE, {}, identity_ids=[alice.id])
        await worker.drain()

        prepare = await store.get_job(prepare.id)
        assert prepare.status is JobStatus.SUCCEEDED, prepare.error
        report = (await store.get_result(GUILD, prepare.id, ALICE)).report
        assert report["faces"] >= 1 and report["lines"][0].startswith(f"me.mp4: {report['faces']} face")
        alice = await store.get_identity(GUILD, alice.id)
        assert alice.status is IdentityStatus.READY and alice.faceset is not None
        assert alice.face_count == report["faces"] and alice.thumbnail is not None

        swap = await store.enqueue(
            GUILD, ALICE, JobKind.SWAP, {"train_seconds": 1, "clip_name": "man.mp4"},
            identity_ids=[alice.id], input=media.clip,
        )  # fmt: skip
        await worker.drain()

        swap = await store.get_job(swap.id)
        assert swap.status is JobStatus.SUCCEEDED, swap.error
        result = await store.get_result(GUILD, swap.id, ALICE)
        assert result.video is not None and result.comparison is not None
        video = await store.decrypt_to(result.video, tmp_path / "result.mp4")
        assert count_frames(video) == CLIP_FRAMES == result.report["frames"]
        assert result.report["swapped"] > 0 and result.report["train_step"] >= 1
        bank = await store.get_bank(GUILD)
        assert bank is not None and set(bank.decoders) == {alice.id}
        assert bank.config["model_args"]["name"] == "lite"
        assert swap.checkpoint is None and swap.input is None  # released with the job
    assert [job_id for job_id, _ in worker.ran] == [prepare.id, swap.id]
    assert worker.leftovers == []


async def test_a_clip_with_two_faces_asks_which_then_swaps_the_chosen_one(enrolled: Enrolled) -> None:
    # The bot's protocol: the contact sheet as the comparison, the clip kept as the video, "faces" in the report;
    # the follow-up job says face: N, counting from 1.
    worker = RecordingWorker(enrolled.settings)
    async with open_storage(enrolled.settings, synchronous="NORMAL") as store:
        ask = await store.enqueue(
            GUILD, ALICE, JobKind.SWAP, {"train_seconds": 1, "clip_name": "two.mp4"},
            identity_ids=[enrolled.alice], input=enrolled.media.two_faces,
        )  # fmt: skip
        await worker.drain()
        asked = await store.get_result(GUILD, ask.id, ALICE)
        assert asked.report["needs_choice"] is True and asked.report["faces"] == 2
        assert asked.comparison is not None and asked.video is not None
        assert await store.read_blob(asked.video) == enrolled.media.two_faces.read_bytes()
        # The raw clip is kept only while the question is open, not for FAMSWAP_RESULT_DAYS.
        assert asked.expires_at - asked.created_at <= timedelta(days=1)

        pick = await store.enqueue(
            GUILD, ALICE, JobKind.SWAP, {"train_seconds": 1, "clip_name": "two.mp4", "track": 1},
            identity_ids=[enrolled.alice], input=await store.read_blob(asked.video),
        )  # fmt: skip
        await worker.drain()
        done = await store.get_job(pick.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        report = (await store.get_result(GUILD, pick.id, ALICE)).report
        assert report["track"] == 1 and report["tracks"] == 2 and report["frames"] == 6
    assert worker.leftovers == []


async def test_cancel_during_training_ends_the_job_within_5_s(enrolled: Enrolled) -> None:
    worker = RecordingWorker(enrolled.settings)  # the default 2 s heartbeat is what notices the cancel
    async with open_storage(enrolled.settings, synchronous="NORMAL") as store:
        job = await store.enqueue(
            GUILD, ALICE, JobKind.SWAP, {"train_seconds": 600, "clip_name": "man.mp4"},
            identity_ids=[enrolled.alice], input=enrolled.media.clip,
        )  # fmt: skip
        running = asyncio.create_task(worker.drain())
        try:
            await wait_job(store, job.id, lambda j: j.progress.stage == "train", timeout=90,
                           what="training", alive=lambda: not running.done())  # fmt: skip
            asked = time.monotonic()
            await store.cancel_job(GUILD, job.id, ALICE)
            done = await wait_job(store, job.id, lambda j: j.status.is_final, timeout=10, what="the cancel")
            took = time.monotonic() - asked
        finally:
            if not running.done():
                worker.request_stop()  # a failed wait must not leave ten minutes of training behind
            await asyncio.wait_for(running, 60)
    assert done.status is JobStatus.CANCELLED and took <= 5.0, f"{done.status.value} after {took:.1f} s"
    assert done.checkpoint is None
    assert worker.leftovers == []


async def test_jobs_of_two_users_take_turns(fresh_settings: Settings, media: Media) -> None:
    # Alice queues three jobs, then Bob three: one worker serves them Alice, Bob, Alice, Bob, ...
    async with open_storage(fresh_settings, synchronous="NORMAL") as store:
        queued = []
        for owner, photo in ((ALICE, media.alice_photo), (BOB, media.bob_photo)):
            for n in range(3):
                identity = await store.create_identity(GUILD, owner, f"person {n}")
                await store.add_upload(
                    GUILD, identity.id, owner, photo, kind=UploadKind.IMAGE, filename="face.jpg"
                )
                queued.append(
                    await store.enqueue(GUILD, owner, JobKind.PREPARE, {}, identity_ids=[identity.id])
                )
        worker = RecordingWorker(fresh_settings)
        await worker.drain()
        jobs = [await store.get_job(job.id) for job in queued]
    assert [owner for _, owner in worker.ran] == [ALICE, BOB] * 3
    assert [job_id for job_id, _ in worker.ran] == [queued[i].id for i in (0, 3, 1, 4, 2, 5)]
    assert all(job.status is JobStatus.SUCCEEDED for job in jobs), [job.error for job in jobs]
    assert worker.leftovers == []


async def test_a_shutdown_just_after_the_last_stage_keeps_the_finished_work(
    fresh_settings: Settings, media: Media, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = RecordingWorker(fresh_settings)
    prepare = worker_module.HANDLERS[JobKind.PREPARE]

    def prepare_then_sigterm(ctx: worker_module.JobContext) -> worker_module.Outcome:
        outcome = prepare(ctx)
        worker.request_stop()  # what the SIGTERM handler does, arriving as the job finishes
        return outcome

    monkeypatch.setitem(worker_module.HANDLERS, JobKind.PREPARE, prepare_then_sigterm)
    async with open_storage(fresh_settings, synchronous="NORMAL") as store:
        alice = await store.create_identity(GUILD, ALICE, "Alice")
        await store.add_upload(
            GUILD, alice.id, ALICE, media.alice_photo, kind=UploadKind.IMAGE, filename="a.jpg"
        )
        job = await store.enqueue(GUILD, ALICE, JobKind.PREPARE, {}, identity_ids=[alice.id])
        await worker.drain()
        done = await store.get_job(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert worker.leftovers == []


async def test_a_clip_without_a_face_fails_with_a_message_for_the_user(enrolled: Enrolled) -> None:
    worker = RecordingWorker(enrolled.settings)
    async with open_storage(enrolled.settings, synchronous="NORMAL") as store:
        job = await store.enqueue(
            GUILD, ALICE, JobKind.SWAP, {"train_seconds": 1, "clip_name": "holiday.mp4"},
            identity_ids=[enrolled.alice], input=enrolled.media.faceless,
        )  # fmt: skip
        await worker.drain()
        done = await store.get_job(job.id)
        with pytest.raises(NotFound):
            await store.get_result(GUILD, job.id, ALICE)
    assert done.status is JobStatus.FAILED and done.attempts == 1  # not retried: retrying cannot help
    assert done.error is not None and done.error.startswith("No face was found in holiday.mp4.")
    assert "Traceback" not in done.error and 'File "' not in done.error and "NoFaceFound" not in done.error
    assert worker.leftovers == []


async def test_a_crash_is_retried_later_with_a_plain_message(
    enrolled: Enrolled, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom: an engine bug")

    monkeypatch.setattr(pipeline, "scan_video", broken)
    worker = RecordingWorker(enrolled.settings)
    async with open_storage(enrolled.settings, synchronous="NORMAL") as store:
        job = await store.enqueue(
            GUILD, ALICE, JobKind.SWAP, {"train_seconds": 1}, identity_ids=[enrolled.alice],
            input=enrolled.media.clip,
        )  # fmt: skip
        await worker.drain()
        done = await store.get_job(job.id)
    assert done.status is JobStatus.QUEUED and done.attempts == 1  # back in the queue after a back-off
    assert done.error is not None and "boom" not in done.error and "went wrong on our side" in done.error
    assert worker.ran == [(job.id, ALICE)] and worker.leftovers == []


async def test_a_refit_job_makes_a_finished_video_smaller(enrolled: Enrolled, tmp_path: Path) -> None:
    # The bot asks for this when Discord refuses a result as too large for the server.
    from swap_engine.label import SYNTHETIC_METADATA
    from swap_engine.video import VideoWriter, probe, read_frames

    big = tmp_path / "big.mp4"
    with VideoWriter(big, 320, 240, 25, crf=4, metadata=SYNTHETIC_METADATA) as writer:
        rng = np.random.default_rng(0)
        for _ in range(50):
            writer.write(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))  # noise: hard to compress
    limit = big.stat().st_size // 4
    worker = RecordingWorker(enrolled.settings)
    async with open_storage(enrolled.settings, synchronous="NORMAL") as store:
        job = await store.enqueue(
            GUILD, ALICE, JobKind.REFIT, {"refit_of": 7, "max_bytes": limit}, identity_ids=[enrolled.alice],
            input=big,
        )  # fmt: skip
        await worker.drain()
        done = await store.get_job(job.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        result = await store.get_result(GUILD, job.id, ALICE)
        assert result.video is not None and result.report["refit_of"] == 7
        smaller = await store.decrypt_to(result.video, tmp_path / "smaller.mp4")
    assert smaller.stat().st_size <= limit
    assert sum(1 for _ in read_frames(smaller)) == 50
    assert probe(smaller).tags.get("comment") == SYNTHETIC_METADATA["comment"]
    assert worker.leftovers == []


def _frame_photo(clip: Path, index: int, dst: Path) -> Path:
    """Frame ``index`` of ``clip`` as a JPEG photo."""
    import itertools

    import cv2

    from swap_engine.video import read_frames

    frame = next(itertools.islice(read_frames(clip), index, None))
    cv2.imwrite(str(dst), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return dst


async def test_enrolling_again_after_retention_keeps_the_earlier_faces(
    fresh_settings: Settings, media: Media, tmp_path: Path
) -> None:
    # Raw uploads are deleted once judged (FAMSWAP_KEEP_UPLOADS off): a second /enroll must merge, not crash.
    worker = RecordingWorker(fresh_settings)
    async with open_storage(fresh_settings, synchronous="NORMAL") as store:
        alice = await store.create_identity(GUILD, ALICE, "Alice")
        await store.add_upload(GUILD, alice.id, ALICE, media.selfie, kind=UploadKind.VIDEO, filename="me.mp4")
        first = await store.enqueue(GUILD, ALICE, JobKind.PREPARE, {}, identity_ids=[alice.id])
        await worker.drain()
        assert (await store.get_job(first.id)).status is JobStatus.SUCCEEDED
        before = (await store.get_identity(GUILD, alice.id)).face_count
        assert before >= 1
        assert all(u.blob is None for u in await store.list_uploads(GUILD, alice.id))  # retention dropped them

        # A later photo of the same man (a frame further on in his selfie video).
        later = _frame_photo(media.selfie_source, 150, tmp_path / "later.jpg")
        await store.add_upload(GUILD, alice.id, ALICE, later, kind=UploadKind.IMAGE, filename="o.jpg")
        second = await store.enqueue(GUILD, ALICE, JobKind.PREPARE, {}, identity_ids=[alice.id])
        await worker.drain()
        done = await store.get_job(second.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        after = await store.get_identity(GUILD, alice.id)
        report = (await store.get_result(GUILD, second.id, ALICE)).report
    assert after.face_count == before + 1 == report["faces"]
    assert report["lines"] == ["o.jpg: 1 face kept"]
    assert worker.leftovers == []


async def test_a_later_enrollment_of_someone_else_asks_first_and_adds_only_when_told(
    fresh_settings: Settings, media: Media
) -> None:
    from storage import PrepareJob

    worker = RecordingWorker(fresh_settings)
    async with open_storage(fresh_settings, synchronous="NORMAL") as store:
        alice = await store.create_identity(GUILD, ALICE, "Alice")
        await store.add_upload(GUILD, alice.id, ALICE, media.selfie, kind=UploadKind.VIDEO, filename="me.mp4")
        await store.enqueue(GUILD, ALICE, JobKind.PREPARE, {}, identity_ids=[alice.id])
        await worker.drain()
        before = await store.get_identity(GUILD, alice.id)

        # A photo of another man: nothing is added, the photo waits (pending), and the job says why.
        photo, _ = await store.add_upload(GUILD, alice.id, ALICE, media.bob_photo, kind=UploadKind.IMAGE,
                                          filename="biden.jpg")
        asked = await store.enqueue(GUILD, ALICE, PrepareJob(identity_id=alice.id, identity_name="Alice"),
                                    identity_ids=[alice.id])
        await worker.drain()
        assert (await store.get_job(asked.id)).status is JobStatus.SUCCEEDED
        report = (await store.get_result(GUILD, asked.id, ALICE)).report
        assert report["needs_confirm"] is True and report["uploads"] == [photo.id]
        assert "biden.jpg does not look like Alice as enrolled before" in report["message"]
        after = await store.get_identity(GUILD, alice.id)
        assert (after.faceset, after.face_count, after.status) == (before.faceset, before.face_count,
                                                                  IdentityStatus.READY)
        (pending,) = [u for u in await store.list_uploads(GUILD, alice.id) if u.id == photo.id]
        assert pending.status is UploadStatus.PENDING and pending.blob is not None

        # "Add anyway": the same photo goes in.
        added = await store.enqueue(GUILD, ALICE, PrepareJob(identity_id=alice.id, identity_name="Alice",
                                                             add_anyway=True), identity_ids=[alice.id])
        await worker.drain()
        assert (await store.get_job(added.id)).status is JobStatus.SUCCEEDED
        report = (await store.get_result(GUILD, added.id, ALICE)).report
        assert "needs_confirm" not in report and report["lines"] == ["biden.jpg: 1 face kept"]
        assert (await store.get_identity(GUILD, alice.id)).face_count == before.face_count + 1
    assert worker.leftovers == []


async def test_a_later_enrollment_keeps_the_enrolled_person_and_turns_down_the_other_one(
    fresh_settings: Settings, media: Media, photos: Path, tmp_path: Path
) -> None:
    worker = RecordingWorker(fresh_settings)
    async with open_storage(fresh_settings, synchronous="NORMAL") as store:
        alice = await store.create_identity(GUILD, ALICE, "Alice")
        await store.add_upload(GUILD, alice.id, ALICE, media.selfie, kind=UploadKind.VIDEO, filename="me.mp4")
        await store.enqueue(GUILD, ALICE, JobKind.PREPARE, {}, identity_ids=[alice.id])
        await worker.drain()
        before = (await store.get_identity(GUILD, alice.id)).face_count

        # Biden first, then a later photo of the same man: one new face each, so the faces enrolled before decide.
        await store.add_upload(GUILD, alice.id, ALICE, photos / "biden.jpg", kind=UploadKind.IMAGE, filename="biden.jpg")
        later = _frame_photo(media.selfie_source, 150, tmp_path / "later.jpg")
        await store.add_upload(GUILD, alice.id, ALICE, later, kind=UploadKind.IMAGE, filename="me-later.jpg")
        job = await store.enqueue(GUILD, ALICE, JobKind.PREPARE, {}, identity_ids=[alice.id])
        await worker.drain()
        report = (await store.get_result(GUILD, job.id, ALICE)).report
        assert "needs_confirm" not in report
        assert report["lines"] == [
            "biden.jpg: rejected — biden.jpg shows someone else — not the person in the faces enrolled before.",
            "me-later.jpg: 1 face kept",
        ]
        assert (await store.get_identity(GUILD, alice.id)).face_count == before + 1
    assert worker.leftovers == []


async def test_two_people_onto_a_two_person_clip_asks_for_each_then_swaps_both(enrolled: Enrolled) -> None:
    worker = RecordingWorker(enrolled.settings)
    async with open_storage(enrolled.settings, synchronous="NORMAL") as store:
        bob = await store.create_identity(GUILD, ALICE, "Bob", on_behalf=True, consent_confirmed_by=ALICE)
        await store.add_upload(GUILD, bob.id, ALICE, enrolled.media.bob_photo, kind=UploadKind.IMAGE, filename="bob.jpg")
        await store.enqueue(GUILD, ALICE, JobKind.PREPARE, {}, identity_ids=[bob.id])
        await worker.drain()
        both = {"train_seconds": 1, "clip_name": "two.mp4", "identity_id": enrolled.alice, "identity_name": "Alice",
                "also_identity_ids": [bob.id], "also_identity_names": ["Bob"], "also_faces": [None]}
        ask = await store.enqueue(GUILD, ALICE, JobKind.SWAP, both, identity_ids=[enrolled.alice, bob.id],
                                  input=enrolled.media.two_faces)  # fmt: skip
        await worker.drain()
        asked = (await store.get_result(GUILD, ask.id, ALICE)).report
        assert asked["needs_choice"] is True and asked["faces"] == 2 and asked["choose_for"] == "Alice"
        # Alice's face chosen: Bob takes the only one left, no second question.
        pick = await store.enqueue(GUILD, ALICE, JobKind.SWAP, {**both, "track": 1},
                                   identity_ids=[enrolled.alice, bob.id], input=enrolled.media.two_faces)  # fmt: skip
        await worker.drain()
        done = await store.get_job(pick.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        report = (await store.get_result(GUILD, pick.id, ALICE)).report
        assert report["identity"] == "Alice and Bob" and report["frames"] == 6
        assert [(p["identity"], p["face"], p["swapped"]) for p in report["people"]] == [("Alice", 2, 6), ("Bob", 1, 6)]
        bank = await store.get_bank(GUILD)
        assert bank is not None and set(bank.decoders) == {enrolled.alice, bob.id}
    assert worker.leftovers == []


def test_assign_faces_takes_the_main_free_person_or_asks() -> None:
    from common.errors import NoFaceFound, NotAllowed
    from worker.swap import assign_faces

    assert assign_faces([10.0, 1.0], [None], ask=True) == ([0], None), "one clear main person: no question"
    assert assign_faces([10.0, 8.0], [None], ask=True) == ([], 0), "two competing: ask"
    assert assign_faces([10.0, 8.0], [None], ask=False) == ([0], None), "the command line takes the main one"
    assert assign_faces([10.0, 8.0, 1.0], [None, None], ask=True) == ([], 0)
    assert assign_faces([10.0, 8.0], [1, None], ask=True) == ([1, 0], None), "the one left"
    assert assign_faces([10.0, 8.0, 7.0], [1, None], ask=True) == ([1], 1)
    assert assign_faces([10.0, 8.0, 7.0], [None, None], ask=False) == ([0, 1], None)
    with pytest.raises(NotAllowed):
        assign_faces([10.0, 8.0], [1, 1], ask=False)
    with pytest.raises(NoFaceFound, match="no face 3"):
        assign_faces([10.0, 8.0], [2], ask=False)
    with pytest.raises(NoFaceFound, match="fewer than the 3"):
        assign_faces([10.0, 8.0], [None, None, None], ask=False)
