"""The warm bank's bookkeeping: warm jobs go last, count against no quota, wait while their guild trains, are
replaced by a newer one; the daily allowance, the plateau and each decoder's trained count."""

from __future__ import annotations

from dataclasses import replace

from storage_testkit import FakeClock

from common.config import Settings
from storage import SYSTEM_USER, WARM_PRIORITY, JobKind, JobStatus, Storage, WarmJob, open_storage


async def _ready(store: Storage, guild: int, owner: int, name: str) -> int:
    person = await store.create_identity(guild, owner, name)
    await store.set_faceset(guild, person.id, b"the faces of " + name.encode(), face_count=1, summary={})
    return person.id


async def test_warm_jobs_go_last_count_against_no_quota_and_wait_while_their_guild_trains(
    settings: Settings, clock: FakeClock
) -> None:
    tight = replace(settings, max_queued_per_user=1, max_queued_per_guild=1, max_queued_total=1,
                    daily_jobs_per_user=1, daily_jobs_total=1)
    async with open_storage(tight, clock=clock, synchronous="NORMAL") as store:
        assert await store.enqueue_warm(1) is None  # nobody with a face set yet
        anna = await _ready(store, 1, 10, "Anna")
        warm = await store.enqueue_warm(1)
        assert warm is not None and warm.kind is JobKind.WARM and isinstance(warm.payload, WarmJob)
        assert warm.owner_id == SYSTEM_USER and warm.priority == WARM_PRIORITY and warm.identity_ids == (anna,)
        assert not await store.waiting_work()  # a warm job waits for nobody
        await store.check_quota(1, 10)  # the queued warm job takes no one's place
        swap = await store.enqueue(1, 10, JobKind.SWAP, identity_ids=[anna])
        assert await store.waiting_work()
        assert (await store.claim("w")).id == swap.id  # the swap first, although queued later
        assert await store.claim("w2") is None  # the guild's bank is training: no warming beside it
        await store.complete(swap.id, "w")
        assert (await store.claim("w2")).id == warm.id


async def test_a_newer_warm_job_replaces_a_queued_one_and_stops_a_running_one(store: Storage) -> None:
    anna = await _ready(store, 1, 10, "Anna")
    first = await store.enqueue_warm(1)
    bob = await _ready(store, 1, 20, "Bob")
    second = await store.enqueue_warm(1)
    assert first is not None and second is not None
    assert (await store.get_job(first.id)).status is JobStatus.CANCELLED
    assert second.identity_ids == (anna, bob)
    assert (await store.claim("w")).id == second.id
    third = await store.enqueue_warm(1)
    assert third is not None and (await store.get_job(second.id)).cancel_requested
    assert await store.claim("w2") is None  # one warming per guild at a time
    await store.finish_cancelled(second.id, "w")
    assert (await store.claim("w2")).id == third.id


async def test_allowance_plateau_and_trained_counts(store: Storage, clock: FakeClock) -> None:
    anna = await _ready(store, 1, 10, "Anna")
    await _ready(store, 2, 30, "Cleo")
    assert await store.guilds_to_warm(0) == []  # off
    assert await store.guilds_to_warm(600) == [1, 2]
    await store.record_warm_run(1, None, started_at=clock(), seconds=500, steps=900, stopped="allowance",
                                trained={anna: 1})
    assert await store.warm_seconds_used(1) == 500
    assert await store.guilds_to_warm(600) == [2, 1]  # the least warmed today first
    assert await store.guilds_to_warm(500) == [2]
    clock.advance(86400 + 1)  # a rolling day later the allowance is back
    assert await store.warm_seconds_used(1) == 0 and await store.guilds_to_warm(500) == [1, 2]
    await store.record_warm_run(1, None, started_at=clock(), seconds=10, steps=30, stopped="plateau",
                                trained={anna: 1})
    assert await store.guilds_to_warm(600) == [2]  # the same people, the same faces: more would not help
    await store.save_bank(1, base_version=0, encoder=b"enc", decoders={anna: b"dec"}, decoder_versions={anna: 1},
                          trained={anna: (100, 60.0)})
    bank = await store.save_bank(1, base_version=1, decoders={anna: b"dec2"}, decoder_versions={anna: 1},
                                 trained={anna: (50, 30.0)})
    assert bank.trained_steps == {anna: 150} and bank.trained_seconds == {anna: 90.0}
    warmth = (await store.warmth(1))[anna]
    assert (warmth.steps, warmth.plateau, warmth.warming) == (150, True, False)
    assert warmth.text() == "warm: trained 150 steps (2 min), at its plateau"
    bob = await _ready(store, 1, 20, "Bob")  # someone new: warming has something to learn again
    assert await store.guilds_to_warm(600) == [2, 1]
    assert not (await store.warmth(1))[anna].plateau and bob not in await store.warmth(1)
    await store.forget_identity(1, anna, 10)  # no warming record names her id any more; the seconds still count
    assert [r[0] for r in await store.db.all("SELECT trained FROM warm_runs WHERE guild_id = 1")] == ["", ""]
    assert await store.warm_seconds_used(1) == 10
    report = await store.forget_guild(1)
    assert report.identities == 1 and await store.db.scalar("SELECT count(*) FROM warm_runs WHERE guild_id = 1") == 0
