"""Fixtures for the worker tests: tiny media cut from the shared clips, and a data home where Alice is enrolled
(through a real prepare job) and the guild's bank is a tiny model, copied fresh for each test."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from common.config import Settings
from storage import IdentityStatus, JobKind, JobStatus, UploadKind, open_storage
from tests.worker.workerkit import (
    ALICE,
    CLIP_FRAMES,
    GUILD,
    RecordingWorker,
    cut_clip,
    faceless_clip,
    make_settings,
    small_photo,
    still_clip,
    tiny_model_config,
    write_encoder,
)


@dataclass(frozen=True)
class Media:
    clip: Path  # 25 frames of one man's face, 256x256, no audio
    faceless: Path  # 12 frames, no face
    two_faces: Path  # 6 frames of two_people.jpg: two faces of about the same size
    selfie: Path  # 12 frames of selfie_man.mp4, 240x240
    selfie_source: Path  # selfie_man.mp4 itself (the same man further on)
    alice_photo: Path  # obama.jpg, 480 px
    bob_photo: Path  # biden.jpg, 480 px


@dataclass(frozen=True)
class Enrolled:
    """A data home with Alice enrolled in GUILD (owner ALICE) and a tiny, untrained bank for the guild."""

    settings: Settings
    alice: int  # her identity id
    media: Media


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Train with one thread: the 2 cores are shared, and two OpenMP threads waiting on each other under load are
    several times slower than one (0.3 s against 1.3-2.7 s a step of the tiny model, measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def media(
    clips: Path, photos: Path, landmarker_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Media:
    folder = tmp_path_factory.mktemp("worker-media")
    return Media(
        clip=cut_clip(clips / "tiny_man_noaudio.mp4", folder / "man.mp4", CLIP_FRAMES, 256),
        faceless=faceless_clip(folder / "no-face.mp4"),
        two_faces=still_clip(photos / "two_people.jpg", folder / "two.mp4"),
        selfie=cut_clip(clips / "selfie_man.mp4", folder / "selfie.mp4", 12, 240),
        selfie_source=clips / "selfie_man.mp4",
        alice_photo=small_photo(photos / "obama.jpg", folder / "alice.jpg"),
        bob_photo=small_photo(photos / "biden.jpg", folder / "bob.jpg"),
    )


async def _enroll_alice(settings: Settings, media: Media, folder: Path) -> int:
    async with open_storage(settings, synchronous="NORMAL") as store:
        alice = await store.create_identity(GUILD, ALICE, "Alice")
        await store.add_upload(
            GUILD, alice.id, ALICE, media.alice_photo, kind=UploadKind.IMAGE, filename="alice.jpg"
        )
        job = await store.enqueue(GUILD, ALICE, JobKind.PREPARE, {}, identity_ids=[alice.id])
    await RecordingWorker(settings).drain()
    async with open_storage(settings, synchronous="NORMAL") as store:
        done = await store.get_job(job.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        assert (await store.get_identity(GUILD, alice.id)).status is IdentityStatus.READY
        encoder = write_encoder(folder / "encoder.pt")
        await store.save_bank(
            GUILD, base_version=0, encoder=encoder, config={"model_args": asdict(tiny_model_config())}
        )
    return alice.id


@pytest.fixture(scope="session")
def enrolled_template(
    media: Media, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("worker-template")
    settings = make_settings(folder / "home", folder / "famswap.key", model_dir)
    alice = asyncio.run(_enroll_alice(settings, media, folder))
    return folder, alice


@pytest.fixture
def enrolled(enrolled_template: tuple[Path, int], media: Media, model_dir: Path, tmp_path: Path) -> Enrolled:
    """A private copy of the enrolled data home (and its key) for one test."""
    template, alice = enrolled_template
    shutil.copytree(template / "home", tmp_path / "home")
    shutil.copy2(template / "famswap.key", tmp_path / "famswap.key")
    return Enrolled(make_settings(tmp_path / "home", tmp_path / "famswap.key", model_dir), alice, media)


@pytest.fixture
def fresh_settings(tmp_path: Path, model_dir: Path, landmarker_model: Path) -> Settings:
    """An empty data home: no identity, no bank."""
    return make_settings(tmp_path / "home", tmp_path / "famswap.key", model_dir)
