"""The file store: encrypted at rest, keyed hashes, atomic writes, wrong keys, tampering, and the orphan sweep."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from storage_testkit import FakeClock, data_files

from common.config import Settings
from common.errors import ConfigError
from storage import Storage, UploadKind, open_storage
from storage import queries as Q
from storage.crypto import (
    CHUNK_SIZE,
    CorruptFile,
    KeyFileError,
    decrypt_stream,
    encrypt_stream,
    load_or_create_key,
)
from storage.files import put_file

MAGICS = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"\x1aE\xdf\xa3")


def _looks_like_media(head: bytes) -> bool:
    return head.startswith(MAGICS) or head[4:8] == b"ftyp"


async def _fill(store: Storage, photos: list[Path], clip: Path | None) -> None:
    await store.ensure_guild(1, "family")
    identity = await store.create_identity(1, 10, "Grandma", on_behalf=True, consent_confirmed_by=10)
    for photo in photos:
        await store.add_upload(1, identity.id, 10, photo, kind=UploadKind.IMAGE, filename=photo.name)
    if clip is not None:
        job = await store.enqueue(1, 10, "swap", {"clip_name": clip.name}, identity_ids=[identity.id], input=clip)
        claimed = await store.claim("w")
        assert claimed is not None and claimed.id == job.id
        await store.report_progress(job.id, "w", stage="train", preview=photos[0].read_bytes())
        await store.complete(
            job.id, "w", video=clip, comparison=photos[-1].read_bytes(), report={"frames": 1}
        )


async def test_no_stored_file_reveals_a_photo_or_video(
    store: Storage, settings: Settings, photos: Path, clips: Path
) -> None:
    import cv2

    pictures = sorted(photos.glob("*.jpg"))[:3]
    await _fill(store, pictures, clips / "tiny_man_noaudio.mp4")
    blobs = [p for p in data_files(settings.home) if p.parent.parent == settings.files_dir]
    assert len(blobs) >= 4  # 3 photos and the clip (the result reuses their content: stored once)
    for path in blobs:
        head = path.read_bytes()[:16]
        assert head.startswith(b"famswap1") and not _looks_like_media(head), path
        assert cv2.imread(str(path)) is None, f"{path} decodes as an image"
        capture = cv2.VideoCapture(str(path))
        try:
            assert not (capture.isOpened() and capture.read()[0]), f"{path} decodes as a video"
        finally:
            capture.release()
        assert (path.stat().st_mode & 0o077) == 0
    # …while the API gives the exact bytes back.
    result = [u for u in await store.list_uploads(1, 1)][0]
    assert await store.read_blob(result.blob) == pictures[0].read_bytes()


async def test_round_trip_bytes_and_paths_across_chunks(store: Storage, tmp_path: Path) -> None:
    big = os.urandom(2 * CHUNK_SIZE + 12345)
    src = tmp_path / "big.bin"
    src.write_bytes(big)
    ref = await put_file(store.db, store.files, src)
    assert ref.size == len(big)
    assert await store.read_blob(ref) == big
    out = await store.decrypt_to(ref, tmp_path / "out.bin")
    assert out.read_bytes() == big and (out.stat().st_mode & 0o777) == 0o600
    empty = await put_file(store.db, store.files, b"")
    assert await store.read_blob(empty) == b""


async def test_digest_is_keyed_not_a_bare_sha256(store: Storage, tmp_path: Path) -> None:
    data = b"a known photo"
    ref = await put_file(store.db, store.files, data)
    assert ref.digest != hashlib.sha256(data).hexdigest()
    other = load_or_create_key(tmp_path / "other.key")
    assert other.digest(data) != ref.digest  # another install's key names the same photo differently


async def test_same_content_is_stored_once(store: Storage, settings: Settings) -> None:
    first = await put_file(store.db, store.files, b"same bytes")
    second = await put_file(store.db, store.files, b"same bytes")
    assert first == second
    assert len([p for p in data_files(settings.files_dir) if p.parent.name != "tmp"]) == 1


def test_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "famswap.key"
    first = load_or_create_key(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_or_create_key(path).key_id == first.key_id
    assert "famswap-key" not in repr(first) and first.encryption_key.hex() not in repr(first)


def test_tampered_or_truncated_file_is_refused(tmp_path: Path) -> None:
    keys = load_or_create_key(tmp_path / "k")
    out = io.BytesIO()
    encrypt_stream(keys, io.BytesIO(b"x" * 3000), out, chunk_size=1024)
    data = bytearray(out.getvalue())
    flipped = bytes(data[:100]) + bytes([data[100] ^ 1]) + bytes(data[101:])
    with pytest.raises(CorruptFile):
        b"".join(decrypt_stream(keys, io.BytesIO(flipped)))
    truncated = bytes(data[: 36 + 2 * (1024 + 16)])  # two whole chunks of three
    with pytest.raises(CorruptFile):
        b"".join(decrypt_stream(keys, io.BytesIO(truncated)))


async def test_wrong_key_gives_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    async with open_storage(settings) as store:
        ref = await put_file(store.db, store.files, b"secret face")
    wrong = load_or_create_key(tmp_path / "wrong.key")
    with (
        open(settings.files_dir / ref.digest[:2] / ref.digest, "rb") as f,
        pytest.raises(KeyFileError) as err,
    ):
        b"".join(decrypt_stream(wrong, f))
    assert "FAMSWAP_KEY_FILE" in err.value.user_text()
    # At start-up, before anything is read: the database remembers which key it was made with.
    with pytest.raises(ConfigError) as err:
        async with open_storage(Settings(home=settings.home, key_file=tmp_path / "wrong.key")):
            pass
    assert "FAMSWAP_KEY_FILE" in err.value.user_text()


async def test_missing_or_garbled_key_is_not_silently_replaced(settings: Settings) -> None:
    async with open_storage(settings):
        pass
    settings.key_path.unlink()
    with pytest.raises(KeyFileError, match="missing") as err:
        async with open_storage(settings):
            pass
    assert "FAMSWAP_KEY_FILE" in err.value.user_text()
    assert not settings.key_path.exists()  # no new key was generated over the data
    settings.key_path.write_text("not a key\n")
    with pytest.raises(KeyFileError, match="not a famswap key"):
        async with open_storage(settings):
            pass


async def test_start_up_sweep_removes_orphans_and_finishes_deletions(
    settings: Settings, clock: FakeClock
) -> None:
    async with open_storage(settings, clock=clock) as store:
        kept = await put_file(store.db, store.files, b"kept", now=clock())
        await store.ensure_guild(1)
        identity = await store.create_identity(1, 10, "Me")
        await store.add_upload(1, identity.id, 10, b"photo", kind=UploadKind.IMAGE, filename="p.jpg")
        half_deleted = await put_file(store.db, store.files, b"half deleted", now=clock())
        # A crash after the rows went but before the file did: the mark is committed, the file still there.
        async with store.db.write() as tx:
            await tx.run(Q.DELETE_BLOB, (half_deleted.digest,))
            await tx.run(Q.MARK_DELETION, (half_deleted.digest, clock()))
        # A crash between writing a file and committing its row, and a half-written temp file.
        orphan = store.files.stage(b"orphan")
        store.files.install(orphan)
        old = clock() - 7200
        os.utime(store.files.path_for(orphan.digest), (old, old))
        temp = store.files.tmp_dir / "abc.part"
        temp.write_bytes(b"partial")
        os.utime(temp, (old, old))
        young = store.files.stage(b"being written right now by another process")
        store.files.install(young)
        # A job folder of a job that is gone.
        (settings.jobs_dir / "999").mkdir(parents=True)
    clock.advance(3600 * 2)
    async with open_storage(settings, clock=clock) as store:
        assert not store.files.exists(half_deleted.digest)
        assert not store.files.exists(orphan.digest)
        assert not temp.exists()
        assert store.files.exists(young.digest)  # too young to be judged an orphan
        assert not (settings.jobs_dir / "999").exists()
        # The stand-alone blob row was never referred to: swept as unreferenced. The upload's file is kept.
        assert not store.files.exists(kept.digest)
        [upload] = await store.list_uploads(1, identity.id)
        assert await store.read_blob(upload.blob) == b"photo"
        assert await store.db.scalar("SELECT count(*) FROM pending_deletions") == 0
