"""The data home is private: folders 0700, the database and its WAL 0600, also when they were made before as 0755/0644."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from common.config import Settings
from storage import JobKind, open_storage


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_data_home_is_private(settings: Settings) -> None:
    old = os.umask(0o022)  # a usual umask: the data home must not depend on it
    try:
        async with open_storage(settings, synchronous="NORMAL") as store:
            job = await store.enqueue(1, 10, JobKind.SWAP, {}, input=b"clip bytes")
            store.job_dir(job.id, "1-test")
            home = settings.home
            assert mode(home) == 0o700 and mode(settings.files_dir) == 0o700 and mode(settings.jobs_dir) == 0o700
            for name in ("famswap.sqlite3", "famswap.sqlite3-wal", "famswap.sqlite3-shm"):
                assert mode(home / name) == 0o600, name
    finally:
        os.umask(old)


async def test_an_existing_open_data_home_is_made_private(settings: Settings) -> None:
    async with open_storage(settings, synchronous="NORMAL"):
        pass
    os.chmod(settings.home, 0o755)
    os.chmod(settings.database_path, 0o644)
    async with open_storage(settings, synchronous="NORMAL"):
        assert mode(settings.home) == 0o700 and mode(settings.database_path) == 0o600


def test_the_command_line_sets_a_private_umask(tmp_path: Path, model_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAMSWAP_", "DISCORD_"))}
    env.update(FAMSWAP_HOME=str(tmp_path / "home"), FAMSWAP_MODEL_DIR=str(model_dir),
               FAMSWAP_KEY_FILE=str(tmp_path / "key"), FAMSWAP_ENV_FILE=str(tmp_path / "no.env"))  # fmt: skip
    script = "import os, sys; os.umask(0o022); from famswap.cli import main; sys.exit(main(['identities']))"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    found = list((tmp_path / "home").rglob("*"))
    assert found, "the data home was created"
    for path in found:
        assert mode(path) == (0o700 if path.is_dir() else 0o600), f"{path} is {oct(mode(path))}"
