"""Consent at the storage level: guild scoping, ownership, grants, on-behalf enrollment, the subject's veto,
forgetting (no row and no file left), guild grace periods, and retention."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from storage_testkit import FakeClock, data_files

from common.config import Settings
from common.errors import NotAllowed, NotFound
from storage import IdentityStatus, JobKind, JobStatus, LeaseLost, Storage, UploadKind, UploadStatus

GUILD, OTHER_GUILD = 100, 200
ALICE, BOB, CAROL, GRANDPA = 1, 2, 3, 4


async def _enrolled(store: Storage, owner: int, name: str, *, guild: int = GUILD, photos: int = 2) -> int:
    identity = await store.create_identity(guild, owner, name)
    for i in range(photos):
        await store.add_upload(
            guild,
            identity.id,
            owner,
            f"{name} photo {i}".encode(),
            kind=UploadKind.IMAGE,
            filename=f"{i}.jpg",
        )
    await store.set_faceset(
        guild,
        identity.id,
        f"{name} faceset".encode(),
        face_count=photos,
        summary={"kept": photos},
        thumbnail=f"{name} grid".encode(),
    )
    return identity.id


async def test_a_guild_cannot_see_another_guilds_identities(store: Storage) -> None:
    alice = await _enrolled(store, ALICE, "Alice")
    with pytest.raises(NotFound):
        await store.get_identity(OTHER_GUILD, alice)
    with pytest.raises(NotFound):
        await store.find_identity(OTHER_GUILD, ALICE, "Alice")
    assert await store.list_identities(OTHER_GUILD, ALICE) == []
    with pytest.raises(NotFound):
        await store.enqueue(OTHER_GUILD, ALICE, JobKind.SWAP, identity_ids=[alice])
    with pytest.raises(NotFound):
        await store.share_identity(OTHER_GUILD, alice, ALICE, BOB)
    with pytest.raises(NotFound):
        await store.forget_identity(OTHER_GUILD, alice, ALICE, is_admin=True)
    assert await store.list_uploads(OTHER_GUILD, alice) == []


async def test_non_owner_is_told_whom_to_ask_and_a_grant_lets_them(store: Storage) -> None:
    alice = await _enrolled(store, ALICE, "Alice")
    with pytest.raises(NotAllowed) as err:
        await store.enqueue(GUILD, BOB, JobKind.SWAP, identity_ids=[alice])
    assert "<@1>" in err.value.user_text() and "/share" in err.value.user_text()
    with pytest.raises(NotAllowed):
        await store.find_identity(GUILD, BOB, "alice")
    with pytest.raises(NotAllowed, match="Only <@1>"):
        await store.share_identity(GUILD, alice, BOB, BOB)
    await store.share_identity(GUILD, alice, ALICE, BOB)
    assert (await store.find_identity(GUILD, BOB, "ALICE")).id == alice
    assert [i.id for i in await store.list_identities(GUILD, BOB, prefix="al")] == [alice]
    job = await store.enqueue(GUILD, BOB, JobKind.SWAP, identity_ids=[alice])
    assert job.identity_ids == (alice,)
    with pytest.raises(NotAllowed):
        await store.check_can_use(GUILD, alice, CAROL)
    await store.share_identity(GUILD, alice, ALICE, None)  # everyone in this guild
    assert (await store.check_can_use(GUILD, alice, CAROL)).id == alice
    assert [g.user_id for g in await store.list_grants(GUILD, alice)] == [None, BOB]


async def test_revoking_cancels_queued_jobs_but_not_running_ones(store: Storage) -> None:
    alice = await _enrolled(store, ALICE, "Alice")
    await store.share_identity(GUILD, alice, ALICE, BOB)
    running = await store.enqueue(GUILD, BOB, JobKind.SWAP, identity_ids=[alice])
    await store.claim("w")
    queued = await store.enqueue(GUILD, BOB, JobKind.SWAP, identity_ids=[alice])
    own = await store.enqueue(GUILD, ALICE, JobKind.SWAP, identity_ids=[alice])
    assert await store.unshare_identity(GUILD, alice, ALICE, BOB) == 1
    cancelled = await store.get_job(queued.id)
    assert cancelled.status is JobStatus.CANCELLED and "no longer shared" in cancelled.error
    assert (await store.get_job(running.id)).status is JobStatus.RUNNING
    assert (await store.get_job(own.id)).status is JobStatus.QUEUED
    with pytest.raises(NotAllowed):
        await store.enqueue(GUILD, BOB, JobKind.SWAP, identity_ids=[alice])


async def test_on_behalf_enrollment_needs_a_confirmation_record(store: Storage, clock: FakeClock) -> None:
    with pytest.raises(NotAllowed, match="permission"):
        await store.create_identity(GUILD, ALICE, "Grandpa", on_behalf=True, subject_user_id=GRANDPA)
    assert await store.db.scalar("SELECT count(*) FROM identities") == 0
    grandpa = await store.create_identity(
        GUILD, ALICE, "Grandpa", on_behalf=True, subject_user_id=GRANDPA, consent_confirmed_by=ALICE
    )
    assert grandpa.on_behalf and grandpa.consent_confirmed_by == ALICE
    assert grandpa.consent_confirmed_at.timestamp() == pytest.approx(clock())
    assert grandpa.status is IdentityStatus.EMPTY
    # The database itself refuses an on-behalf row without a confirmation.
    with pytest.raises(sqlite3.IntegrityError):
        async with store.db.write() as tx:
            await tx.run("UPDATE identities SET consent_confirmed_by = NULL WHERE id = ?", (grandpa.id,))
    with pytest.raises(NotAllowed, match="already enrolled"):
        await store.create_identity(GUILD, ALICE, "grandpa", on_behalf=True, consent_confirmed_by=ALICE)


async def test_the_subject_can_claim_and_delete_an_identity_about_them(store: Storage) -> None:
    grandpa = await store.create_identity(
        GUILD, ALICE, "Grandpa", on_behalf=True, subject_user_id=GRANDPA, consent_confirmed_by=ALICE
    )
    await store.share_identity(GUILD, grandpa.id, ALICE, BOB)
    bob_job = await store.enqueue(GUILD, BOB, JobKind.SWAP, identity_ids=[grandpa.id])
    # The subject may use it and may see it listed, even before claiming.
    assert [i.id for i in await store.list_identities(GUILD, GRANDPA)] == [grandpa.id]
    with pytest.raises(NotAllowed):
        await store.claim_identity(GUILD, grandpa.id, BOB)
    claimed = await store.claim_identity(GUILD, grandpa.id, GRANDPA)
    assert claimed.owner_id == GRANDPA and not claimed.on_behalf
    assert await store.list_grants(GUILD, grandpa.id) == []
    assert (await store.get_job(bob_job.id)).status is JobStatus.CANCELLED
    with pytest.raises(NotAllowed):
        await store.forget_identity(GUILD, grandpa.id, ALICE)  # no longer Alice's
    report = await store.forget_identity(GUILD, grandpa.id, GRANDPA)
    assert report.identities == 1


def _all_rows(db_path: Path) -> list[tuple[str, dict]]:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [(t, dict(row)) for t in tables for row in conn.execute(f"SELECT * FROM {t}")]
    finally:
        conn.close()


async def test_forget_identity_leaves_no_row_and_no_file(store: Storage, settings: Settings) -> None:
    alice = await _enrolled(store, ALICE, "Alice")
    bob = await _enrolled(store, BOB, "Bobby")
    await store.share_identity(GUILD, bob, BOB, ALICE)
    alice_files = {p.name for p in data_files(settings.files_dir)}
    # Bob's data, a job with a result and a running job that use Bob, a decoder for each.
    done = await store.enqueue(GUILD, ALICE, JobKind.SWAP, identity_ids=[bob], input=b"clip one")
    await store.claim("w")
    await store.complete(done.id, "w", video=b"alice as bobby", comparison=b"gif", report={"x": 1})
    running = await store.enqueue(GUILD, ALICE, JobKind.SWAP, identity_ids=[bob], input=b"clip two")
    await store.record_post(running.id, channel_id=5, status_message_id=6)
    await store.claim("w2")
    await store.report_progress(running.id, "w2", stage="train", preview=b"bobby preview")
    await store.save_bank(
        GUILD, base_version=0, encoder=b"encoder", decoders={alice: b"dec alice", bob: b"dec bob"}
    )
    before = {p.name for p in data_files(settings.files_dir)}
    bob_files = (
        before - alice_files - {store.files.keys.digest(b"encoder"), store.files.keys.digest(b"dec alice")}
    )

    report = await store.forget_identity(GUILD, bob, BOB)
    assert (
        report.identities == 1
        and report.jobs == 2
        and report.results == 1
        and report.running_jobs_stopped == 1
    )

    # No file of Bob's is left anywhere under the data home…
    remaining = {p.name for p in data_files(settings.home)}
    assert bob_files and not bob_files & remaining
    # …no row mentions him, his name or his files…
    for table, row in _all_rows(settings.database_path):
        text = repr(row)
        assert "Bobby" not in text, (table, row)
        assert not any(digest in text for digest in bob_files), (table, row)
        assert row.get("identity_id") != bob and (table != "identities" or row["id"] != bob), (table, row)
    # …the worker still running it is told to stop, and Alice's things are intact.
    with pytest.raises(LeaseLost, match="erased"):
        await store.heartbeat(running.id, "w2")
    assert (await store.get_identity(GUILD, alice)).faceset is not None
    bank = await store.get_bank(GUILD)
    assert set(bank.decoders) == {alice} and await store.read_blob(bank.decoders[alice]) == b"dec alice"


async def test_forget_user_removes_their_identities_jobs_and_grants(
    store: Storage, settings: Settings
) -> None:
    alice = await _enrolled(store, ALICE, "Alice")
    grandpa = await store.create_identity(
        GUILD, BOB, "Grandpa", on_behalf=True, subject_user_id=ALICE, consent_confirmed_by=BOB
    )  # an identity of Alice enrolled by Bob: "everything about me" covers it too
    bob = await _enrolled(store, BOB, "Bob")
    await store.share_identity(GUILD, bob, BOB, ALICE)
    await store.enqueue(GUILD, ALICE, JobKind.SWAP, identity_ids=[bob], input=b"alice's clip")
    report = await store.forget_user(ALICE)
    assert report.identities == 2 and report.jobs == 1
    with pytest.raises(NotFound):
        await store.get_identity(GUILD, grandpa.id)
    with pytest.raises(NotFound):
        await store.get_identity(GUILD, alice)
    assert await store.list_grants(GUILD, bob) == []
    for table, row in _all_rows(settings.database_path):
        assert "Alice" not in repr(row), (table, row)
        if table == "users":
            assert row["id"] != ALICE
    assert (await store.get_identity(GUILD, bob)).owner_id == BOB


async def test_guild_grace_period_then_erase(store: Storage, settings: Settings, clock: FakeClock) -> None:
    await _enrolled(store, ALICE, "Alice")
    kept = await _enrolled(store, ALICE, "Alice", guild=OTHER_GUILD)
    await store.enqueue(GUILD, ALICE, JobKind.SWAP, input=b"clip")
    guild = await store.schedule_guild_deletion(GUILD)
    assert guild.deletion_due_at.timestamp() == pytest.approx(clock() + settings.guild_grace_days * 86400)
    assert await store.run_due_deletions() == []
    await store.cancel_guild_deletion(GUILD)  # the bot was invited back
    await store.schedule_guild_deletion(GUILD, after_days=1)
    clock.advance(86401)
    assert await store.run_due_deletions() == [GUILD]
    with pytest.raises(NotFound):
        await store.get_guild(GUILD)
    assert await store.db.scalar("SELECT count(*) FROM jobs") == 0
    assert (await store.get_identity(OTHER_GUILD, kept)).owner_id == ALICE
    names = {p.name for p in data_files(settings.files_dir)}
    assert store.files.keys.digest(b"Alice faceset") in names  # the other guild's copy (same content) stays


async def test_results_expire_and_raw_uploads_are_dropped_after_extraction(
    store: Storage, clock: FakeClock
) -> None:
    identity = await store.create_identity(GUILD, ALICE, "Alice")
    first, _ = await store.add_upload(
        GUILD, identity.id, ALICE, b"photo 1", kind=UploadKind.IMAGE, filename="1.jpg"
    )
    second, _ = await store.add_upload(
        GUILD, identity.id, ALICE, b"photo 2", kind=UploadKind.IMAGE, filename="2.jpg"
    )
    again, new = await store.add_upload(
        GUILD, identity.id, ALICE, b"photo 1", kind=UploadKind.IMAGE, filename="x.jpg"
    )
    assert not new and again.id == first.id
    await store.record_upload_outcome(
        first.id, UploadStatus.ACCEPTED, faces_found=1, quality={"sharpness": 0.9}
    )
    await store.record_upload_outcome(second.id, UploadStatus.REJECTED, reason="No face found in 2.jpg.")
    await store.set_faceset(GUILD, identity.id, b"faceset", face_count=1, summary={})
    uploads = await store.list_uploads(GUILD, identity.id)
    assert all(u.blob is None for u in uploads)  # raw photos gone, rows (hash, verdict) kept
    assert not store.files.exists(first.content_digest)
    assert uploads[1].reason == "No face found in 2.jpg." and uploads[0].quality == {"sharpness": 0.9}
    _, new = await store.add_upload(
        GUILD, identity.id, ALICE, b"photo 1", kind=UploadKind.IMAGE, filename="y.jpg"
    )
    assert not new  # still recognised as a resend
    job = await store.enqueue(GUILD, ALICE, JobKind.SWAP, identity_ids=[identity.id])
    await store.claim("w")
    await store.complete(job.id, "w", video=b"result video")
    result = await store.get_result(GUILD, job.id, BOB)
    clock.advance(store.limits.result_days * 86400 + 1)
    assert await store.expire_results() == 1
    assert not store.files.exists(result.video.digest)
    with pytest.raises(NotFound):
        await store.get_result(GUILD, job.id, ALICE)


async def test_private_results_and_bank_versions(store: Storage) -> None:
    await store.update_guild_settings(GUILD, result_visibility="owner")
    job = await store.enqueue(GUILD, ALICE, JobKind.SWAP)
    await store.claim("w")
    await store.complete(job.id, "w", report={"frames": 3})
    assert (await store.get_result(GUILD, job.id, ALICE)).report == {"frames": 3}
    with pytest.raises(NotAllowed, match="private to <@1>"):
        await store.get_result(GUILD, job.id, BOB)
    from storage import BankConflict

    bank = await store.save_bank(GUILD, base_version=0, encoder=b"enc1", config={"model": "lite"})
    assert bank.version == 1 and bank.config == {"model": "lite"}
    with pytest.raises(BankConflict):
        await store.save_bank(GUILD, base_version=0, encoder=b"enc-stale")
    bank = await store.save_bank(GUILD, base_version=1, decoders={12345: b"decoder of nobody"})
    assert bank.version == 2 and bank.decoders == {} and await store.read_blob(bank.encoder) == b"enc1"
