"""The encrypted, content-addressed file store under ``files/``: ``files/ab/abcdef…`` named by the keyed hash.

Writing is two-phase so that a database row never points at a file that is not durable:

1. ``stage(source)`` encrypts into ``files/tmp/<random>.part`` (chunk by chunk), fsyncs it and learns the digest.
2. ``commit_staged(tx, store, staged)`` runs inside the caller's write transaction: it renames the temp file into
   place, fsyncs the folder, inserts the ``blobs`` row and clears any pending deletion of that digest. The rows that
   refer to the file are inserted in the same transaction.

Deleting is the reverse: rows go and the digest is marked in ``pending_deletions`` in one transaction
(``release``); ``finish_deletions`` then unlinks each file under the database write lock (so a concurrent writer of
the same content cannot be undone) and drops the mark. A crash anywhere leaves either a mark to finish or an orphan
file the start-up sweep removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from storage import queries as Q
from storage.crypto import CorruptFile, Keyring, decrypt_stream, encrypt_stream
from storage.db import Database, Tx
from storage.records import BlobRef

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
TMP_SUFFIX = ".part"


@dataclass(frozen=True)
class Staged:
    """An encrypted file written under ``files/tmp`` and fsynced, not yet in place."""

    tmp: Path
    digest: str
    size: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """Encrypted files named by the keyed hash of their plaintext. Methods here are blocking: call them from a
    thread (``asyncio.to_thread``) when the file may be large."""

    def __init__(self, root: Path, keys: Keyring) -> None:
        self.root = Path(root)
        self.keys = keys
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            os.chmod(self.root, 0o700)

    def path_for(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise ValueError(f"not a file digest: {digest!r}")
        return self.root / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def stage(self, source: Path | bytes) -> Staged:
        """Encrypt ``source`` (a path, streamed, or bytes) into a fsynced temp file."""
        tmp = self.tmp_dir / f"{secrets.token_hex(12)}{TMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb", buffering=0) as raw, io.BufferedWriter(raw, 1 << 20) as out:
                if isinstance(source, bytes | bytearray | memoryview):
                    digest, size = encrypt_stream(self.keys, io.BytesIO(bytes(source)), out)
                else:
                    with open(source, "rb") as src:
                        digest, size = encrypt_stream(self.keys, src, out)
                out.flush()
                os.fsync(raw.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return Staged(tmp, digest, size)

    def install(self, staged: Staged) -> None:
        """Rename a staged file into place (replacing an identical-content file is harmless) and make it durable."""
        final = self.path_for(staged.digest)
        final.parent.mkdir(exist_ok=True, mode=0o700)
        os.replace(staged.tmp, final)
        _fsync_dir(final.parent)

    def discard(self, staged: Staged) -> None:
        staged.tmp.unlink(missing_ok=True)

    def read(self, ref: BlobRef) -> bytes:
        """The whole plaintext in memory (fine for images and small videos; use ``decrypt_to`` for big ones)."""
        out = bytearray()
        for chunk in self._chunks(ref):
            out += chunk
        return bytes(out)

    def decrypt_to(self, ref: BlobRef, dst: Path) -> Path:
        """Write the plaintext to ``dst`` (mode 0600) through a temp name, chunk by chunk."""
        dst = Path(dst)
        tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self._chunks(ref):
                    out.write(chunk)
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return dst

    def _chunks(self, ref: BlobRef) -> Iterator[bytes]:
        path = self.path_for(ref.digest)
        hasher = self.keys.hasher()
        with open(path, "rb") as src:
            for chunk in decrypt_stream(self.keys, src, name=f"stored file {ref.digest[:12]}"):
                hasher.update(chunk)
                yield chunk
        if hasher.hexdigest() != ref.digest:
            # Authenticated but under the wrong name: a bug or a hand-moved file, never silently another photo.
            raise CorruptFile(f"stored file {ref.digest[:12]} holds different content than its name says.")

    def unlink(self, digest: str) -> bool:
        try:
            self.path_for(digest).unlink()
            return True
        except FileNotFoundError:
            return False

    def stored(self) -> Iterator[tuple[str, Path]]:
        """Every file in place: (digest, path)."""
        for folder in self.root.iterdir():
            if len(folder.name) != 2 or not folder.is_dir():
                continue
            for path in folder.iterdir():
                if _DIGEST.match(path.name) and path.name.startswith(folder.name):
                    yield path.name, path

    def temp_files(self) -> Iterator[Path]:
        yield from self.tmp_dir.glob(f"*{TMP_SUFFIX}")


async def stage(store: FileStore, source: Path | bytes) -> Staged:
    """``store.stage`` in a thread: encrypting 100 MB must not freeze the bot's event loop."""
    return await asyncio.to_thread(store.stage, source)


async def commit_staged(tx: Tx, store: FileStore, staged: Staged, now: float) -> BlobRef:
    """Inside the caller's write transaction: put the file in place and record it. Returns its reference."""
    known = await tx.scalar(Q.BLOB_EXISTS, (staged.digest,))
    if known and store.exists(staged.digest):
        store.discard(staged)  # same content already stored: dedupe
    else:
        store.install(staged)
        await tx.run(Q.INSERT_BLOB, (staged.digest, staged.size, now))
    await tx.run(Q.UNMARK_DELETION, (staged.digest,))
    return BlobRef(staged.digest, staged.size)


async def put_file(db: Database, store: FileStore, source: Path | bytes, now: float | None = None) -> BlobRef:
    """Store a file on its own (a ``blobs`` row and nothing referring to it yet). Prefer the API methods, which
    insert the referring row in the same transaction."""
    staged = await stage(store, source)
    try:
        async with db.write() as tx:
            return await commit_staged(tx, store, staged, time.time() if now is None else now)
    finally:
        store.discard(staged)


async def release(tx: Tx, digests: Iterable[str | None], now: float) -> list[str]:
    """Inside a write transaction that removed references: drop the blob rows no longer referred to and mark their
    files for deletion. Returns the marked digests (pass them to ``finish_deletions`` after the commit)."""
    wanted = sorted({d for d in digests if d})
    if not wanted:
        return []
    rows = await tx.all(Q.UNREFERENCED_AMONG, (json.dumps(wanted),))
    marked = [row[0] for row in rows]
    for digest in marked:
        await tx.run(Q.DELETE_BLOB, (digest,))
        await tx.run(Q.MARK_DELETION, (digest, now))
    return marked


async def finish_deletions(db: Database, store: FileStore, digests: Iterable[str] | None = None) -> int:
    """Unlink marked files and drop their marks (all marks when ``digests`` is None). Re-runnable after a crash.

    Each unlink happens inside ``BEGIN IMMEDIATE`` after re-checking the mark: a writer that stored the same content
    meanwhile removed the mark, and its file is left alone.
    """
    if digests is None:
        pending = [row[0] for row in await db.all(Q.PENDING_DELETIONS)]
    else:
        pending = list(digests)
    removed = 0
    for start in range(0, len(pending), 200):
        async with db.write() as tx:
            for digest in pending[start : start + 200]:
                still_marked = await tx.scalar(Q.DELETION_MARKED, (digest,))
                if not still_marked:
                    continue
                if not await tx.scalar(Q.BLOB_EXISTS, (digest,)):
                    removed += store.unlink(digest)
                await tx.run(Q.UNMARK_DELETION, (digest,))
    return removed


async def sweep_orphans(
    db: Database, store: FileStore, *, min_age: float, now: float
) -> tuple[int, int, int]:
    """Remove temp files and files without a ``blobs`` row older than ``min_age`` seconds, and blob rows nothing
    refers to. Returns (orphan files, temp files, orphan blob rows). Younger files may be another process's write
    in progress, so they are left for the next sweep."""
    cutoff = now - min_age
    # File times come from the real clock, whatever clock the caller runs on.
    file_cutoff = time.time() - min_age
    temp = 0
    for path in list(store.temp_files()):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < file_cutoff:
                path.unlink()
                temp += 1
    candidates = []
    for digest, path in store.stored():
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < file_cutoff:
                candidates.append(digest)
    orphans = 0
    for start in range(0, len(candidates), 200):
        async with db.write() as tx:
            for digest in candidates[start : start + 200]:
                if not await tx.scalar(Q.BLOB_EXISTS, (digest,)):
                    orphans += store.unlink(digest)
    async with db.write() as tx:
        rows = await tx.all(Q.UNREFERENCED_BLOBS, (cutoff,))
        marked = await release(tx, [row[0] for row in rows], now)
    await finish_deletions(db, store, marked)
    if orphans or temp or marked:
        log.info("swept %d orphan files, %d temp files, %d unreferenced blobs", orphans, temp, len(marked))
    return orphans, temp, len(marked)
