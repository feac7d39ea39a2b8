"""Fixtures for the storage tests: a data home and key in a temp folder, a controllable clock, an open Storage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from storage_testkit import FakeClock

from common.config import Settings
from storage import Storage, open_storage


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The key lives outside the data home, as by default.
    return Settings(home=tmp_path / "home", key_file=tmp_path / "keys" / "famswap.key")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(settings: Settings, clock: FakeClock) -> AsyncIterator[Storage]:
    # synchronous=NORMAL: the tests do not cut power, and fsync per commit only slows them down.
    async with open_storage(settings, clock=clock, synchronous="NORMAL") as opened:
        yield opened
