"""The SQLite connection every process opens the same way: WAL, foreign keys, busy timeout, migrations at open.

A ``Database`` wraps one aiosqlite connection. Work happens in transactions: ``async with db.write() as tx`` runs
``BEGIN IMMEDIATE`` (the write lock is taken up front, so two processes never both read-then-write and deadlock),
``async with db.read() as tx`` a consistent read. Coroutines of one process take turns on the connection through an
``asyncio.Lock``; processes take turns through SQLite's lock and ``busy_timeout``.

Migrations: ``migrations/NNNN_name.sql`` applied in order, each in its own transaction, recorded in
``PRAGMA user_version``. A new database gets ``migrations/schema.sql`` (the current schema in one file) instead; a
test proves both paths give the same schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import aiosqlite

from common.errors import FamswapError

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
MIN_SQLITE = (3, 35, 0)  # UPDATE … RETURNING

Params = Sequence[Any] | dict[str, Any]


class DatabaseError(FamswapError):
    """The database cannot be used: too new, not famswap's, or SQLite too old."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def _migrations_dir() -> Traversable:
    return resources.files("storage") / "migrations"


def load_migrations() -> list[Migration]:
    """The numbered migration files, in order. Numbers must run 1, 2, 3… without gaps."""
    found = []
    for entry in _migrations_dir().iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise DatabaseError(
                f"migration {expected:04d} is missing (found {migration.version:04d}_{migration.name})."
            )
    return found


def fresh_schema() -> str:
    return (_migrations_dir() / "schema.sql").read_text(encoding="utf-8")


def split_statements(script: str) -> list[str]:
    """Split an SQL script into statements (a trigger's ``BEGIN … END`` body stays whole)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if any(part.strip() and not part.strip().startswith("--") for part in current.splitlines()):
        raise DatabaseError(f"unterminated SQL statement: {current.strip()[:80]}")
    return statements


class Tx:
    """One open transaction: run named queries (``storage.queries``) with parameters."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        async with self._conn.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def row(self, sql: str, params: Params = ()) -> sqlite3.Row:
        """The one row of a query that always has one (an aggregate such as ``count(*)``)."""
        row = await self.one(sql, params)
        if row is None:
            raise DatabaseError(f"no row from a query that always has one: {sql.split(chr(10))[0][:60]}")
        return row

    async def all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        async with self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def scalar(self, sql: str, params: Params = ()) -> Any:
        row = await self.one(sql, params)
        return None if row is None else row[0]

    async def run(self, sql: str, params: Params = ()) -> int:
        """Execute a statement; returns the number of rows it changed."""
        async with self._conn.execute(sql, params) as cursor:
            return cursor.rowcount

    async def insert(self, sql: str, params: Params = ()) -> int:
        """Execute an INSERT; returns the new rowid."""
        async with self._conn.execute(sql, params) as cursor:
            return cursor.lastrowid or 0

    async def run_many(self, sql: str, rows: Iterable[Params]) -> None:
        await self._conn.executemany(sql, rows)


class Database:
    """One connection to the famswap database. Use ``open_database``; do not build it directly."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()  # one transaction at a time on this connection

    @asynccontextmanager
    async def _transaction(self, begin: str) -> AsyncIterator[Tx]:
        # Cancellation-safe: a task cancelled anywhere in here (e.g. a poller stopped during a restart) must not
        # leave the shared connection inside a transaction. aiosqlite runs statements in order on one thread, so a
        # shielded ROLLBACK/COMMIT still lands before the next BEGIN.
        async with self._lock:
            try:
                await self._conn.execute(begin)
                yield Tx(self._conn)
            except BaseException:
                if self._conn.in_transaction:
                    await asyncio.shield(self._conn.execute("ROLLBACK"))
                raise
            else:
                await asyncio.shield(self._conn.execute("COMMIT"))

    def write(self) -> AbstractAsyncContextManager[Tx]:
        """``async with db.write() as tx``: a write transaction (``BEGIN IMMEDIATE``), committed on success."""
        return self._transaction("BEGIN IMMEDIATE")

    def read(self) -> AbstractAsyncContextManager[Tx]:
        """``async with db.read() as tx``: a read transaction seeing one consistent snapshot."""
        return self._transaction("BEGIN")

    async def one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        async with self.read() as tx:
            return await tx.one(sql, params)

    async def all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        async with self.read() as tx:
            return await tx.all(sql, params)

    async def scalar(self, sql: str, params: Params = ()) -> Any:
        async with self.read() as tx:
            return await tx.scalar(sql, params)

    async def user_version(self) -> int:
        return int(await self.scalar("PRAGMA user_version"))

    async def close(self) -> None:
        await self._conn.close()


def _private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does (its -wal and -shm files copy the mode), or make an existing
    one 0600: it holds names, Discord ids, consent records and interaction tokens."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.chmod(f"{path}{suffix}", 0o600)


async def _connect(path: Path, busy_timeout_ms: int, synchronous: str) -> aiosqlite.Connection:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise DatabaseError(
            f"SQLite {sqlite3.sqlite_version} is too old for famswap (3.35 or newer is needed).",
            hint="Use a Python build with a newer SQLite (the official Docker image has one).",
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _private_file(path)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        # busy_timeout first: the pragmas after it may already need the lock another process holds.
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        await conn.execute("PRAGMA foreign_keys = ON")
        # Erased rows (names, file names, digests) are overwritten with zeros, not left in free pages: many SQLite
        # builds do this by default, not all.
        await conn.execute("PRAGMA secure_delete = ON")
        async with conn.execute("PRAGMA journal_mode = WAL") as cursor:
            row = await cursor.fetchone()
            mode = row[0] if row is not None else "unknown"
        if str(mode).lower() != "wal":
            log.warning("database %s is in %s mode, not WAL (is it on a network filesystem?)", path, mode)
        await conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        await conn.close()
        raise
    return conn


async def apply_migrations(db: Database, *, upto: int | None = None, fresh_install: bool = True) -> int:
    """Bring the schema to ``upto`` (default: the newest). A new database gets ``schema.sql`` in one transaction
    when ``fresh_install`` (and ``upto`` is the newest), else every migration in turn. Returns the version.

    Each step re-reads ``user_version`` inside ``BEGIN IMMEDIATE``, so processes opening the database at the same
    moment apply each migration exactly once.
    """
    migrations = load_migrations()
    latest = migrations[-1].version if migrations else 0
    target = latest if upto is None else upto
    if fresh_install and target == latest:
        async with db.write() as tx:
            version = int(await tx.scalar("PRAGMA user_version"))
            tables = int(await tx.scalar("SELECT count(*) FROM sqlite_master"))
            if version == 0 and tables == 0:
                for statement in split_statements(fresh_schema()):
                    await tx.run(statement)
                await tx.run(f"PRAGMA user_version = {latest}")
                log.info("created database %s (schema version %d)", db.path, latest)
                return latest
    for migration in migrations:
        if migration.version > target:
            break
        async with db.write() as tx:
            version = int(await tx.scalar("PRAGMA user_version"))
            if version == 0 and migration.version == 1:
                tables = int(await tx.scalar("SELECT count(*) FROM sqlite_master"))
                if tables:
                    raise DatabaseError(
                        f"{db.path} is not a famswap database (it has tables but no famswap schema version).",
                        hint="Set FAMSWAP_HOME to a folder of its own.",
                    )
            if version >= migration.version:
                continue
            for statement in split_statements(migration.sql):
                await tx.run(statement)
            if "writable_schema" in migration.sql:
                # It edited the stored schema text: a new schema_version makes every connection (this one
                # included) re-read it, as SQLite's documented procedure requires.
                schema_version = int(await tx.scalar("PRAGMA schema_version"))
                await tx.run(f"PRAGMA schema_version = {schema_version + 1}")
            await tx.run(f"PRAGMA user_version = {migration.version}")
            log.info("migrated %s to version %d (%s)", db.path, migration.version, migration.name)
    version = await db.user_version()
    if version > latest:
        raise DatabaseError(
            f"{db.path} was written by a newer famswap (schema version {version}; this one knows {latest}).",
            hint="Upgrade famswap, or point FAMSWAP_HOME at another data home.",
        )
    return version


@asynccontextmanager
async def open_database(
    path: Path,
    *,
    migrate: bool = True,
    busy_timeout_ms: int = 15_000,
    synchronous: str = "FULL",
) -> AsyncIterator[Database]:
    """Open (creating and migrating) the database at ``path``; closed on exit.

    ``synchronous=FULL`` makes every commit durable before it returns (a finished result or an accepted upload
    survives a power cut); ``NORMAL`` is faster and still never corrupts in WAL mode.
    """
    if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"synchronous={synchronous!r}")
    conn = await _connect(Path(path), busy_timeout_ms, synchronous.upper())
    db = Database(conn, Path(path))
    try:
        if migrate:
            await apply_migrations(db)
        yield db
    finally:
        await db.close()
