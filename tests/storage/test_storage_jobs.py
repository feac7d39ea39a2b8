"""Typed jobs: JSON round-trip, loud failures on unknown / missing / mistyped fields, and the migration that turns
jobs stored with the old payload spellings into typed ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.config import Settings
from storage import (
    JobKind,
    JobSpecError,
    PrepareJob,
    RefitJob,
    Storage,
    SwapJob,
    TrainJob,
    job_from_dict,
    job_from_json,
    open_storage,
)
from storage.db import apply_migrations, open_database

SPECS = [
    PrepareJob(identity_id=3, identity_name="Grandma", title="Enrolling Grandma"),
    TrainJob(model="lite", train_seconds=1.5, seed=7),
    SwapJob(identity_id=3, identity_name="Grandma", clip_name="holiday.mp4", track=1, quality="best",
            max_bytes=8_000_000, train_steps=20),
    SwapJob(identity_id=3, identity_name="Grandma", also_identity_ids=[5, 6], also_identity_names=["Grandpa", "Ann"],
            also_faces=[None, 2]),
    RefitJob(refit_of=12, max_bytes=7_000_000, identity_name="Grandma", clip_name="holiday.mp4"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind.value}-{len(s.to_json())}")
def test_every_kind_round_trips_through_json(spec: object) -> None:
    assert isinstance(spec, PrepareJob | TrainJob | SwapJob | RefitJob)
    again = job_from_json(spec.kind, spec.to_json())
    assert again == spec and type(again) is type(spec)


def test_unknown_missing_and_mistyped_fields_fail_loudly() -> None:
    with pytest.raises(JobSpecError, match="no field.*filename"):
        job_from_dict(JobKind.SWAP, {"filename": "old.mp4"})
    with pytest.raises(JobSpecError, match="needs the field.*max_bytes.*refit_of"):
        job_from_dict(JobKind.REFIT, {})
    with pytest.raises(JobSpecError, match="track"):
        job_from_dict(JobKind.SWAP, {"track": "2"})
    with pytest.raises(JobSpecError, match="seed"):
        job_from_dict(JobKind.TRAIN, {"seed": True})  # a bool is no int here
    with pytest.raises(JobSpecError, match="not a job kind"):
        job_from_dict("upscale", {})
    with pytest.raises(JobSpecError, match="JSON object"):
        job_from_json(JobKind.SWAP, "[1, 2]")
    assert job_from_dict(JobKind.TRAIN, {"train_seconds": 2}) == TrainJob(train_seconds=2)  # an int is a float


async def test_enqueue_stores_the_typed_job_and_refuses_a_bad_one(store: Storage) -> None:
    job = await store.enqueue(1, 10, SPECS[2], identity_ids=(), enforce_quota=False)
    assert job.kind is JobKind.SWAP and (await store.get_job(job.id)).payload == SPECS[2]
    same = await store.enqueue(1, 10, JobKind.SWAP, SPECS[2].to_dict(), enforce_quota=False)
    assert same.payload == SPECS[2]
    with pytest.raises(JobSpecError, match="face"):
        await store.enqueue(1, 10, JobKind.SWAP, {"face": 2}, enforce_quota=False)
    with pytest.raises(TypeError):
        await store.enqueue(1, 10, SPECS[2], {"track": 1}, enforce_quota=False)
    assert len(await store.list_jobs(1)) == 2  # nothing was stored for the refused ones


async def test_migration_types_the_jobs_stored_before(tmp_path: Path, settings: Settings) -> None:
    settings.home.mkdir(parents=True)
    old = {  # as the bot and the command line wrote them at schema version 1
        "prepare": ("prepare", {"identity_id": 1, "identity_name": "Bob", "title": "Enrolling Bob"}),
        "picked": ("swap", {"identity_id": 1, "identity_name": "Bob", "clip_name": "a.mp4", "face": 2,
                            "quality": "preview", "max_bytes": 9_000_000, "title": "Bob → a.mp4"}),
        "unpicked": ("swap", {"identity_id": 1, "identity_name": "Bob", "clip_name": "a.mp4", "face": None,
                              "quality": "preview", "max_bytes": 9_000_000, "title": "Bob → a.mp4"}),
        "cli": ("swap", {"train_seconds": 1, "model": "lite", "filename": "b.mp4"}),
        "refit": ("swap", {"identity_id": 1, "identity_name": "Bob", "clip_name": "a.mp4", "face": None,
                           "quality": "preview", "max_bytes": 5_000_000, "title": "Bob → a.mp4", "refit_of": 2}),
    }
    async with open_database(settings.database_path, migrate=False) as db:
        assert await apply_migrations(db, upto=1, fresh_install=False) == 1
        async with db.write() as tx:
            await tx.run("INSERT INTO guilds (id, name, created_at) VALUES (1, '', 0)")
            await tx.run("INSERT INTO users (id, name, created_at) VALUES (10, '', 0)")
            for kind, payload in old.values():
                await tx.run("INSERT INTO jobs (guild_id, owner_id, kind, payload, run_after, created_at) "
                             "VALUES (1, 10, ?, ?, 0, 0)", (kind, json.dumps(payload)))
    async with open_storage(settings) as store:
        jobs = {name: await store.get_job(n) for n, name in enumerate(old, start=1)}
    assert jobs["prepare"].payload == PrepareJob(identity_id=1, identity_name="Bob", title="Enrolling Bob")
    picked = jobs["picked"].payload
    assert isinstance(picked, SwapJob) and picked.track == 1 and picked.clip_name == "a.mp4"  # face 2 = track 1
    assert jobs["unpicked"].payload == SwapJob(identity_id=1, identity_name="Bob", clip_name="a.mp4",
                                               quality="preview", max_bytes=9_000_000, title="Bob → a.mp4")
    assert jobs["cli"].payload == SwapJob(train_seconds=1, model="lite", clip_name="b.mp4")
    assert jobs["refit"].kind is JobKind.REFIT
    assert jobs["refit"].payload == RefitJob(refit_of=2, max_bytes=5_000_000, identity_id=1, identity_name="Bob",
                                             clip_name="a.mp4", title="Bob → a.mp4")


def test_a_swap_of_several_people_pairs_each_identity_with_its_face() -> None:
    old = job_from_dict(JobKind.SWAP, {"identity_id": 3, "identity_name": "Grandma", "track": 1})  # stored before
    assert [(c.identity_id, c.face) for c in old.cast()] == [(3, 1)]
    spec = SwapJob(identity_id=3, identity_name="Grandma", also_identity_ids=[5], also_identity_names=["Grandpa"],
                   also_faces=[None])
    assert [(c.identity_name, c.face) for c in spec.cast()] == [("Grandma", None), ("Grandpa", None)]
    chosen = spec.with_face(1, 0).with_face(0, 2)
    assert [(c.identity_name, c.face) for c in chosen.cast()] == [("Grandma", 2), ("Grandpa", 0)]
    with pytest.raises(JobSpecError, match="also_faces"):
        job_from_dict(JobKind.SWAP, {"identity_id": 3, "also_identity_ids": [5], "also_faces": ["two"],
                                     "also_identity_names": ["Grandpa"]})
    with pytest.raises(JobSpecError, match="length"):
        SwapJob(identity_id=3, also_identity_ids=[5])
