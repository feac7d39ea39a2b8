"""Migrations: a new database and one migrated step by step from every earlier version end with the same schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from storage_testkit import schema_snapshot

from storage import queries as Q
from storage.db import DatabaseError, apply_migrations, load_migrations, open_database, split_statements

LATEST = load_migrations()[-1].version


async def test_new_database_is_wal_with_foreign_keys_and_latest_version(tmp_path: Path) -> None:
    async with open_database(tmp_path / "db.sqlite3") as db:
        assert await db.user_version() == LATEST
        assert await db.scalar("PRAGMA journal_mode") == "wal"
        assert await db.scalar("PRAGMA foreign_keys") == 1
        assert await db.scalar("PRAGMA busy_timeout") > 0


async def test_fresh_schema_equals_all_migrations_applied_in_turn(tmp_path: Path) -> None:
    async with open_database(tmp_path / "fresh.sqlite3"):
        pass
    async with open_database(tmp_path / "stepwise.sqlite3", migrate=False) as db:
        assert await apply_migrations(db, fresh_install=False) == LATEST
    assert schema_snapshot(tmp_path / "fresh.sqlite3") == schema_snapshot(tmp_path / "stepwise.sqlite3")


@pytest.mark.parametrize("start", range(LATEST))
async def test_upgrade_from_each_earlier_version_keeps_data(tmp_path: Path, start: int) -> None:
    path = tmp_path / f"from{start}.sqlite3"
    async with open_database(path, migrate=False) as db:
        assert await apply_migrations(db, upto=start, fresh_install=False) == start
        if start >= 1:
            async with db.write() as tx:
                await tx.run("INSERT INTO guilds (id, name, created_at) VALUES (1, 'kept', 0)")
    async with open_database(path) as db:  # what every process does at start-up
        assert await db.user_version() == LATEST
        if start >= 1:
            assert await db.scalar("SELECT name FROM guilds WHERE id = 1") == "kept"
    async with open_database(tmp_path / "fresh.sqlite3"):
        pass
    assert schema_snapshot(path) == schema_snapshot(tmp_path / "fresh.sqlite3")


async def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    for _ in range(3):
        async with open_database(tmp_path / "db.sqlite3") as db:
            assert await db.user_version() == LATEST
            assert await db.scalar("SELECT count(*) FROM counters") == 2


async def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with open_database(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()
    with pytest.raises(DatabaseError, match="newer famswap"):
        async with open_database(path):
            pass


async def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x)")
    conn.close()
    with pytest.raises(DatabaseError, match="not a famswap database"):
        async with open_database(path):
            pass


def test_migration_files_are_numbered_without_gaps() -> None:
    assert [m.version for m in load_migrations()] == list(range(1, LATEST + 1))


def test_split_statements_keeps_trigger_bodies_whole() -> None:
    script = "-- c;\nCREATE TABLE a (x);\nCREATE TRIGGER t AFTER INSERT ON a BEGIN\n  SELECT 1;\n  SELECT 2;\nEND;\n-- end"
    parts = split_statements(script)
    assert len(parts) == 2 and parts[1].startswith("CREATE TRIGGER") and parts[1].endswith("END;")


async def test_every_file_reference_is_known_to_the_unreferenced_query(tmp_path: Path) -> None:
    # A column referring to blobs that BLOB_REFERENCES misses would make its files look unused and get them deleted.
    async with open_database(tmp_path / "db.sqlite3") as db:
        tables = [row[0] for row in await db.all("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = set()
        for table in tables:
            for fk in await db.all(f"PRAGMA foreign_key_list('{table}')"):
                if fk["table"] == "blobs":
                    found.add((table, fk["from"]))
    assert found == set(Q.BLOB_REFERENCES)
