"""Encryption at rest: the key file, keyed content hashes, and chunked AES-GCM streams for stored files.

Key file (``FAMSWAP_KEY_FILE``, default outside the data home): one line ``famswap-key-1:<base64url of 32 bytes>``,
mode 0600, generated on first start. Sub-keys are derived with HKDF-SHA256, one per purpose, so the key that names
files cannot decrypt them and vice versa.

Encrypted file format (version 1)::

    header   36 bytes: b"famswap1" | key id (8) | salt (16) | chunk size (uint32, big endian)
    chunks   AES-256-GCM(file key, nonce, plaintext chunk, associated data = header) = chunk + 16-byte tag

    file key = HKDF(encryption sub-key, salt=salt, info=b"famswap/file")   (a fresh salt per file: nonces never repeat)
    nonce    = chunk index (uint64, big endian) | 1 if last chunk else 0 | 3 zero bytes

The index in the nonce stops chunks from being reordered, the "last" flag stops a file from being truncated at a
chunk boundary, and the header as associated data binds every chunk to its file. Plaintext chunks are 1 MiB, so a
100 MB upload is never held in memory twice. The key id lets a wrong key fail with a clear message instead of an
authentication error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from common.errors import ConfigError, FamswapError

log = logging.getLogger(__name__)

KEY_PREFIX = "famswap-key-1:"
MAGIC = b"famswap1"
HEADER = struct.Struct(">8s8s16sI")
TAG_SIZE = 16
CHUNK_SIZE = 1024 * 1024
KEY_HINT = (
    "Point FAMSWAP_KEY_FILE at the key file this data home was created with (by default "
    "~/.config/famswap/famswap.key), or start with an empty data home to generate a new key."
)


class KeyFileError(ConfigError):
    """The key file is unreadable, malformed, or not the key the data was encrypted with."""


class CorruptFile(FamswapError):
    """A stored file fails authentication: it was changed, truncated, or is not a famswap file."""


def _derive(master: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(master)


@dataclass(frozen=True, repr=False)
class Keyring:
    """The sub-keys derived from the master key; never printed (``repr`` hides them)."""

    path: Path
    encryption_key: bytes
    hash_key: bytes
    key_id: bytes  # 8 bytes, stored in every file header and in the database

    @classmethod
    def from_master(cls, master: bytes, path: Path) -> Keyring:
        return cls(
            path=path,
            encryption_key=_derive(master, b"famswap/encrypt"),
            hash_key=_derive(master, b"famswap/content-hash"),
            key_id=_derive(master, b"famswap/key-id")[:8],
        )

    def __repr__(self) -> str:
        return f"Keyring(path={str(self.path)!r}, key_id={self.key_id.hex()})"

    def hasher(self) -> hmac.HMAC:
        """A keyed hash of plaintext: dedupe works, but nobody without the key can test for a known photo."""
        return hmac.new(self.hash_key, digestmod=hashlib.sha256)

    def digest(self, data: bytes) -> str:
        h = self.hasher()
        h.update(data)
        return h.hexdigest()


def load_or_create_key(path: Path) -> Keyring:
    """Read the key at ``path``, creating it (mode 0600, parents 0700) when absent. Two processes starting at once
    end up with the same key: the file is written aside and linked into place, which fails if one already exists."""
    path = Path(path).expanduser()
    if not path.exists():
        _create_key(path)
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"The encryption key file {path} cannot be read ({exc}).", hint=KEY_HINT) from None
    master = _parse_key(text)
    if master is None:
        raise KeyFileError(f"The encryption key file {path} is not a famswap key.", hint=KEY_HINT)
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o600
    if mode & 0o077:
        log.warning("key file %s is readable by others (mode %o); run: chmod 600 %s", path, mode, path)
    return Keyring.from_master(master, path)


def _parse_key(text: str) -> bytes | None:
    if not text.startswith(KEY_PREFIX):
        return None
    try:
        master = base64.urlsafe_b64decode(text[len(KEY_PREFIX) :].encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None
    return master if len(master) == 32 else None


def _create_key(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            line = KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii") + "\n"
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic "create if absent": another process may have won the race
            log.info(
                "generated a new encryption key at %s (back it up: without it stored faces are unreadable)",
                path,
            )
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise KeyFileError(f"Cannot create the encryption key file {path} ({exc}).", hint=KEY_HINT) from None


def _nonce(index: int, last: bool) -> bytes:
    return struct.pack(">QB3x", index, 1 if last else 0)


def encrypt_stream(
    keys: Keyring, src: BinaryIO, dst: BinaryIO, chunk_size: int = CHUNK_SIZE
) -> tuple[str, int]:
    """Encrypt ``src`` into ``dst``; returns (keyed hash of the plaintext, plaintext size). One chunk in memory."""
    salt = secrets.token_bytes(16)
    header = HEADER.pack(MAGIC, keys.key_id, salt, chunk_size)
    aead = AESGCM(_derive(keys.encryption_key, b"famswap/file", salt))
    hasher = keys.hasher()
    dst.write(header)
    size = 0
    index = 0
    chunk = src.read(chunk_size)
    while True:
        # Read one ahead to know whether this chunk is the last (an empty file is one empty last chunk).
        following = src.read(chunk_size) if len(chunk) == chunk_size else b""
        last = not following
        hasher.update(chunk)
        size += len(chunk)
        dst.write(aead.encrypt(_nonce(index, last), chunk, header))
        if last:
            break
        chunk, index = following, index + 1
    return hasher.hexdigest(), size


def decrypt_stream(keys: Keyring, src: BinaryIO, name: str = "stored file") -> Iterator[bytes]:
    """Yield the plaintext chunks of an encrypted stream, authenticating each. ``KeyFileError`` for a wrong key,
    ``CorruptFile`` for anything tampered with or truncated."""
    header = src.read(HEADER.size)
    if len(header) != HEADER.size:
        raise CorruptFile(f"{name} is truncated (no header).")
    magic, key_id, salt, chunk_size = HEADER.unpack(header)
    if magic != MAGIC:
        raise CorruptFile(f"{name} is not a famswap encrypted file.")
    if key_id != keys.key_id:
        raise KeyFileError(
            f"{name} was encrypted with a different key than the one in {keys.path}.", hint=KEY_HINT
        )
    if not 0 < chunk_size <= 64 * CHUNK_SIZE:
        raise CorruptFile(f"{name} has an impossible chunk size.")
    aead = AESGCM(_derive(keys.encryption_key, b"famswap/file", salt))
    step = chunk_size + TAG_SIZE
    index = 0
    block = src.read(step)
    while True:
        following = src.read(step) if len(block) == step else b""
        last = not following
        try:
            yield aead.decrypt(_nonce(index, last), block, header)
        except InvalidTag:
            raise CorruptFile(
                f"{name} fails authentication at chunk {index} (changed or truncated)."
            ) from None
        if last:
            return
        block, index = following, index + 1
