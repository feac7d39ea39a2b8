"""The job queue in one process: fairness, priority, quotas, leases, retries, cancel, progress and the bot's feed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from storage_testkit import FakeClock

from common.config import Settings
from common.errors import NotAllowed, QuotaExceeded
from storage import JobKind, JobStatus, LeaseLost, Storage, open_storage


async def _jobs(store: Storage, guild: int, owner: int, n: int, **kw) -> list[int]:
    return [
        (await store.enqueue(guild, owner, JobKind.SWAP, {"title": f"job {i}"}, enforce_quota=False, **kw)).id
        for i in range(n)
    ]


async def _drain(store: Storage) -> list[tuple[int, int]]:
    """Claim and complete everything with one worker; (guild, owner) in claim order."""
    order = []
    while (job := await store.claim("w")) is not None:
        order.append((job.guild_id, job.owner_id))
        await store.complete(job.id, "w")
    return order


async def test_two_users_jobs_interleave(store: Storage) -> None:
    await _jobs(store, 1, 10, 4)  # user 10 queues four jobs first…
    await _jobs(store, 1, 20, 4)  # …then user 20: they still alternate
    assert [owner for _, owner in await _drain(store)] == [10, 20] * 4


async def test_guilds_take_turns_before_users(store: Storage) -> None:
    await _jobs(store, 1, 10, 2)
    await _jobs(store, 1, 11, 2)
    await _jobs(store, 2, 20, 2)
    assert await _drain(store) == [(1, 10), (2, 20), (1, 11), (2, 20), (1, 10), (1, 11)]


async def test_priority_goes_first_and_kinds_filter(store: Storage) -> None:
    low = await store.enqueue(1, 10, JobKind.SWAP, enforce_quota=False)
    high = await store.enqueue(1, 20, JobKind.PREPARE, priority=5, enforce_quota=False)
    assert (await store.claim("w", kinds=[JobKind.SWAP])).id == low.id
    assert (await store.claim("w")).id == high.id
    assert await store.claim("w") is None


async def test_queue_position_follows_the_fair_order_and_gives_an_eta(
    store: Storage, clock: FakeClock
) -> None:
    # History: a swap takes 100 s.
    done = await store.enqueue(1, 99, JobKind.SWAP, enforce_quota=False)
    await store.claim("w")
    clock.advance(100)
    await store.complete(done.id, "w")
    a = await _jobs(store, 1, 10, 3)
    b = await _jobs(store, 1, 20, 1)
    position = await store.queue_position(b[0])
    assert (position.position, position.ahead) == (2, 1)  # after user 10's first job, not after all three
    assert position.eta_seconds == pytest.approx(200)
    last = await store.queue_position(a[2])
    assert last.position == 4
    running = await store.claim("w")
    clock.advance(30)
    assert (await store.queue_position(running.id)).eta_seconds == pytest.approx(70)


async def test_queued_limits_and_daily_quota_say_when_they_reset(store: Storage, clock: FakeClock) -> None:
    limits = store.limits
    for _ in range(limits.max_queued_per_user):
        await store.enqueue(1, 10, JobKind.SWAP)
    with pytest.raises(QuotaExceeded, match=f"the limit is {limits.max_queued_per_user}"):
        await store.enqueue(1, 10, JobKind.SWAP)
    await store.update_guild_settings(1, daily_jobs_per_user=4, max_queued_per_guild=5)
    for _ in range(limits.max_queued_per_user):
        job = await store.claim("w")
        await store.complete(job.id, "w")
    await store.enqueue(1, 10, JobKind.SWAP)  # the 4th today
    clock.advance(3600)
    with pytest.raises(QuotaExceeded) as err:
        await store.enqueue(1, 10, JobKind.SWAP)
    text = err.value.user_text()
    assert "last 24 hours (the limit is 4)" in text and "resets at" in text and "in 23 h" in text
    clock.advance(23 * 3600 + 1)
    await store.enqueue(1, 10, JobKind.SWAP)
    for owner in (20, 21, 22):
        await store.enqueue(1, owner, JobKind.SWAP)
    with pytest.raises(QuotaExceeded, match="This server already has 5"):
        await store.enqueue(1, 23, JobKind.SWAP)


async def test_a_guild_can_lower_the_hosts_limits_but_never_raise_them(store: Storage) -> None:
    host = store.limits.max_queued_per_user  # 3
    await store.update_guild_settings(1, max_queued_per_user=host + 10, daily_jobs_per_user=1000)
    for _ in range(host):
        await store.enqueue(1, 10, JobKind.SWAP)
    with pytest.raises(QuotaExceeded, match=f"the limit is {host}"):
        await store.enqueue(1, 10, JobKind.SWAP)
    await store.update_guild_settings(1, max_queued_per_user=1)  # lowering works
    await store.enqueue(1, 20, JobKind.SWAP)
    with pytest.raises(QuotaExceeded, match="the limit is 1"):
        await store.enqueue(1, 20, JobKind.SWAP)


async def test_host_wide_caps_count_every_guild(settings: Settings, tmp_path: Path) -> None:
    capped = replace(settings, max_queued_total=4, daily_jobs_total=6)
    async with open_storage(capped, synchronous="NORMAL") as store:
        for guild in (1, 2, 3, 4):
            await store.enqueue(guild, 10 + guild, JobKind.SWAP)
        with pytest.raises(QuotaExceeded, match="famswap is busy: 4 jobs are waiting or running"):
            await store.enqueue(5, 15, JobKind.SWAP)
        with pytest.raises(QuotaExceeded):
            await store.check_quota(5, 15)
        for _ in range(4):
            job = await store.claim("w")
            await store.complete(job.id, "w")
        await store.enqueue(5, 15, JobKind.SWAP)
        await store.enqueue(6, 16, JobKind.SWAP)
        with pytest.raises(QuotaExceeded, match="6 jobs in the last 24 hours, this host's limit") as err:
            await store.enqueue(7, 17, JobKind.SWAP)
        assert "resets at" in err.value.user_text()


async def test_failure_retries_with_backoff_then_fails(store: Storage, clock: FakeClock) -> None:
    job = await store.enqueue(1, 10, JobKind.SWAP, max_attempts=3)
    delays = []
    for attempt in (1, 2):
        claimed = await store.claim("w")
        assert claimed.attempts == attempt
        failed = await store.fail(job.id, "w", "GPU hiccup")
        assert failed.status is JobStatus.QUEUED and failed.error == "GPU hiccup"
        delays.append(failed.run_after.timestamp() - clock())
        assert await store.claim("w") is None  # not before the backoff
        clock.advance(delays[-1] + 0.1)
    assert delays == pytest.approx([30, 60])
    await store.claim("w")
    final = await store.fail(job.id, "w", "No face found in the clip.")
    assert (
        final.status is JobStatus.FAILED
        and final.attempts == 3
        and final.error == "No face found in the clip."
    )


async def test_expired_lease_is_requeued_and_resumes_from_its_checkpoint(
    store: Storage, clock: FakeClock
) -> None:
    job = await store.enqueue(1, 10, JobKind.SWAP, input=b"clip")
    await store.claim("dead", lease_seconds=30)
    await store.save_checkpoint(job.id, "dead", {"stage": "train", "step": 500}, checkpoint=b"weights")
    assert await store.claim("alive") is None  # lease still valid
    clock.advance(31)
    assert [j.id for j in await store.stalled_jobs()] == [job.id]
    again = await store.claim("alive")
    assert again.id == job.id and again.attempts == 2 and again.worker_id == "alive"
    assert again.state == {"stage": "train", "step": 500}
    assert await store.read_blob(again.checkpoint) == b"weights"
    with pytest.raises(LeaseLost, match="another worker"):
        await store.heartbeat(job.id, "dead")
    with pytest.raises(LeaseLost):
        await store.complete(job.id, "dead")
    done = await store.complete(job.id, "alive", video=b"out")
    assert done.status is JobStatus.SUCCEEDED
    assert done.checkpoint is None and done.input is None  # released once final


async def test_a_job_whose_worker_keeps_dying_fails(store: Storage, clock: FakeClock) -> None:
    job = await store.enqueue(1, 10, JobKind.SWAP, max_attempts=2)
    for _ in range(2):
        await store.claim("w", lease_seconds=5)
        clock.advance(6)
    assert await store.claim("w") is None
    final = await store.get_job(job.id)
    assert final.status is JobStatus.FAILED and "stopped 2 times" in final.error


async def test_cancel_queued_at_once_and_running_through_the_heartbeat(store: Storage) -> None:
    queued = await store.enqueue(1, 10, JobKind.SWAP)
    running = await store.enqueue(1, 10, JobKind.SWAP)
    with pytest.raises(NotAllowed, match="<@10>"):
        await store.cancel_job(1, queued.id, by_user_id=20)
    claimed = await store.claim("w")
    assert claimed.id == queued.id
    # (the first one is now running; cancel the second while it waits)
    cancelled = await store.cancel_job(1, running.id, by_user_id=10)
    assert cancelled.status is JobStatus.CANCELLED
    assert not (await store.heartbeat(claimed.id, "w")).cancel_requested
    asked = await store.cancel_job(1, claimed.id, by_user_id=99, is_admin=True)
    assert asked.status is JobStatus.RUNNING and asked.cancel_requested
    assert (await store.heartbeat(claimed.id, "w")).cancel_requested
    stopped = await store.finish_cancelled(claimed.id, "w")
    assert stopped.status is JobStatus.CANCELLED


async def test_progress_is_rate_bounded_and_feeds_the_bot(store: Storage, clock: FakeClock) -> None:
    job = await store.enqueue(1, 10, JobKind.SWAP)
    await store.record_post(job.id, channel_id=500, status_message_id=600, interaction_token="tok")
    [update] = await store.pending_updates()
    assert update.job.status is JobStatus.QUEUED and update.post.status_message_id == 600
    await store.update_post(job.id, posted_seq=update.job.update_seq)
    assert await store.pending_updates() == []
    await store.claim("w")
    assert await store.report_progress(job.id, "w", stage="train", percent=1, preview=b"p1")
    assert not await store.report_progress(job.id, "w", stage="train", percent=2)  # too soon
    assert await store.report_progress(job.id, "w", stage="convert", percent=0)  # a new stage always goes
    clock.advance(store.limits.progress_interval)
    assert await store.report_progress(job.id, "w", stage="convert", percent=50, preview=b"p2")
    [update] = await store.pending_updates()
    assert update.job.progress.stage == "convert" and update.job.progress.percent == 50
    assert await store.read_blob(update.job.progress.preview) == b"p1"  # p2 came too soon after p1: dropped
    cursor = update.job.update_seq
    assert await store.pending_updates(after_seq=cursor) == []
    await store.complete(job.id, "w", video=b"video", report={"ok": True})
    [update] = await store.pending_updates(after_seq=cursor)
    assert update.job.status is JobStatus.SUCCEEDED and update.result is not None
    assert await store.read_blob(update.result.video) == b"video"
    post = await store.update_post(
        job.id, posted_seq=update.job.update_seq, result_message_id=700, interaction_token=None
    )
    assert post.result_message_id == 700 and post.status_message_id == 600 and post.interaction_token is None
    assert await store.pending_updates() == []


async def test_list_jobs_and_guild_scoping(store: Storage) -> None:
    mine = await store.enqueue(1, 10, JobKind.SWAP)
    await store.enqueue(2, 10, JobKind.SWAP)
    await store.enqueue(1, 20, JobKind.SWAP)
    assert [j.id for j in await store.list_jobs(1, 10)] == [mine.id]
    assert len(await store.list_jobs(1)) == 2
    with pytest.raises(Exception, match="no job"):
        await store.get_job(mine.id, guild_id=2)


async def test_release_hands_the_job_back_without_counting_the_attempt(tmp_path: Path) -> None:
    from common.config import Settings
    from storage import JobKind, JobStatus, open_storage

    settings = Settings.load(
        {"FAMSWAP_HOME": str(tmp_path / "home"), "FAMSWAP_KEY_FILE": str(tmp_path / "key")}, env_file=tmp_path / "x"
    )
    async with open_storage(settings) as store:
        job = await store.enqueue(1, 10, JobKind.PREPARE, {})
        claimed = await store.claim("w1")
        assert claimed is not None and claimed.id == job.id and claimed.attempts == 1
        released = await store.release(job.id, "w1")
        assert released.status is JobStatus.QUEUED and released.attempts == 0 and released.worker_id is None
        again = await store.claim("w2")
        assert again is not None and again.id == job.id and again.attempts == 1
