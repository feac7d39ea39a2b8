"""Fixtures for the bot suite: a fake Discord, real storage in a fresh data home, and the real bot between them.

The worker is stood in for by ``StandInWorker``: it claims jobs and finishes them through storage's API with canned
media, as the real worker does, so the bot's side is tested end to end without training anything.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import FamswapBot, build_bot
from common.config import Settings
from storage import Identity, Job, JobKind, Storage, UploadStatus, open_storage
from tests.bot.fake_discord import FakeChannel, FakeDiscord, FakeGuild, FakeUser

log = logging.getLogger(__name__)


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


def gif_bytes() -> bytes:
    frames = [Image.new("RGB", (48, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    return out.getvalue()


@dataclass
class Family:
    """One server: alice (its owner, so an admin), bob and carol (members), a #general and a #movies channel."""

    guild: FakeGuild
    general: FakeChannel
    movies: FakeChannel
    alice: FakeUser
    bob: FakeUser
    carol: FakeUser


class BotRunner:
    """Starts and stops the real bot against the fake; ``restart`` stands for the bot process being restarted."""

    def __init__(self, fake: FakeDiscord, settings: Settings, store: Storage) -> None:
        self.fake, self.settings, self.store = fake, settings, store
        self.bot: FamswapBot | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, **options: Any) -> FamswapBot:
        options = {"poll_interval": 0.1, "edit_interval": 0.3, "guild_ready_timeout": 0.05, **options}
        self.bot = build_bot(self.settings, self.store, **options)
        self.task = asyncio.create_task(self.bot.start(self.settings.require_token()))
        await asyncio.wait_for(self.bot.wait_until_ready(), 15)
        await self.fake.connected()
        return self.bot

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, 15)
        self.bot, self.task = None, None

    async def restart(self, **options: Any) -> FamswapBot:
        await self.stop()
        return await self.start(**options)


class StandInWorker:
    """Plays the worker through storage's API: claim, report progress, finish with canned results."""

    worker_id = "stand-in"

    def __init__(self, store: Storage) -> None:
        self.store = store

    async def claim(self, kind: JobKind) -> Job:
        for _ in range(100):
            job = await self.store.claim(self.worker_id, kinds=[kind])
            if job is not None:
                return job
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {kind} job was queued")

    async def progress(self, job: Job, stage: str, percent: float, *, preview: bytes | None = None) -> None:
        await self.store.report_progress(job.id, self.worker_id, stage=stage, percent=percent, preview=preview, force=True)

    async def prepare(self, *, rejected: dict[str, str] | None = None) -> Job:
        """Finish the next prepare job: every upload accepted (one face) unless named in ``rejected``."""
        job = await self.claim(JobKind.PREPARE)
        (identity_id,) = job.identity_ids
        rejected = rejected or {}
        kept = 0
        for upload in await self.store.list_uploads(job.guild_id, identity_id, status=UploadStatus.PENDING):
            if upload.filename in rejected:
                await self.store.record_upload_outcome(upload.id, UploadStatus.REJECTED, reason=rejected[upload.filename])
            else:
                await self.store.record_upload_outcome(upload.id, UploadStatus.ACCEPTED, faces_found=1)
                kept += 1
        await self.store.set_faceset(
            job.guild_id, identity_id, b"faceset archive", face_count=kept,
            summary={"text": f"{kept} sharp, frontal faces"}, thumbnail=image_bytes("PNG", (96, 32)),
        )
        return await self.store.complete(job.id, self.worker_id, report={"faces": kept})

    async def swap(
        self, video: bytes, *, gif: bytes | None = None, job: Job | None = None, report: dict | None = None
    ) -> Job:
        job = job or await self.claim(JobKind.SWAP)
        return await self.store.complete(
            job.id, self.worker_id, video=video, comparison=gif if gif is not None else gif_bytes(),
            report=report or {"frames": 10},
        )


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
def family(fake: FakeDiscord) -> Family:
    alice, bob, carol = fake.add_user("alice"), fake.add_user("bob"), fake.add_user("carol")
    guild = fake.add_guild("The Family", alice, channels=("general", "movies"))
    fake.add_member(guild, bob)
    fake.add_member(guild, carol)
    return Family(guild, guild.channels[0], guild.channels[1], alice, bob, carol)


@pytest.fixture
def settings(fake: FakeDiscord, home: Path, tmp_path: Path) -> Settings:
    environ = {
        **fake.environ(),
        "FAMSWAP_HOME": str(home),
        "FAMSWAP_KEY_FILE": str(tmp_path / "famswap.key"),
        "FAMSWAP_MAX_UPLOAD_MB": "1",
        "FAMSWAP_MAX_CLIP_SECONDS": "20",
    }
    return Settings.load(environ, env_file=tmp_path / "no.env")


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Storage]:
    async with open_storage(settings) as opened:
        yield opened


@pytest.fixture
async def runner(fake: FakeDiscord, family: Family, settings: Settings, store: Storage) -> AsyncIterator[BotRunner]:
    """The bot, started (family first, so the guild is in READY)."""
    bot_runner = BotRunner(fake, settings, store)
    await bot_runner.start()
    try:
        yield bot_runner
    finally:
        await bot_runner.stop()


@pytest.fixture
def worker(store: Storage) -> StandInWorker:
    return StandInWorker(store)


async def ready_identity(store: Storage, guild: FakeGuild, owner: FakeUser, name: str | None = None, **kw: Any) -> Identity:
    """An identity with a face set, made straight through storage (for tests about swapping, not enrolling)."""
    identity = await store.create_identity(guild.id, owner.id, name or owner.name, **kw)
    await store.set_faceset(guild.id, identity.id, b"faces", face_count=3, summary={}, thumbnail=image_bytes())
    return await store.get_identity(guild.id, identity.id)
