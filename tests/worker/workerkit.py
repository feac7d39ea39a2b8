"""What the worker tests and their child processes share: settings for a data home, a tiny model, tiny media.

Child processes (multiprocessing spawn) import this module, so it stays free of pytest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from common.config import Settings
from storage import Job, Storage
from worker.loop import Worker

if TYPE_CHECKING:
    from swap_engine.model import ModelConfig

GUILD = 1
ALICE = 11  # Discord user ids
BOB = 12
CLIP_FRAMES = 25


def make_settings(home: Path, key: Path, model_dir: Path) -> Settings:
    """Settings for one test's data home (CPU, the lite model); no .env file is read."""
    return Settings.load(
        {
            "FAMSWAP_HOME": str(home),
            "FAMSWAP_MODEL_DIR": str(model_dir),
            "FAMSWAP_KEY_FILE": str(key),
            "FAMSWAP_MODEL": "lite",
            "FAMSWAP_DEVICE": "cpu",
            "FAMSWAP_WARM_MINUTES_PER_DAY": "0",  # tests/worker/test_warm.py turns warming on where it is tested
        },
        env_file=home.parent / "no-such.env",
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as FAMSWAP_* variables, for a `famswap` subprocess."""
    return {
        "FAMSWAP_HOME": str(settings.home),
        "FAMSWAP_MODEL_DIR": str(settings.models_path),
        "FAMSWAP_KEY_FILE": str(settings.key_path),
        "FAMSWAP_MODEL": settings.model,
        "FAMSWAP_DEVICE": "cpu",
        "FAMSWAP_ENV_FILE": str(settings.home.parent / "no-such.env"),
        "FAMSWAP_LOG_LEVEL": "info",
        "FAMSWAP_WARM_MINUTES_PER_DAY": str(settings.warm_minutes_per_day),
    }


# -----------------------------------------------------------------------------
# a model small enough to train a few steps a second on a busy 2-core CPU


def tiny_model_config() -> ModelConfig:
    from swap_engine.model import ModelConfig  # imports torch: only when needed, as in the engine

    # 32 px, three stride-2 convs and two upscales at an eighth of the classic width: ~0.3 M parameters.
    return ModelConfig(
        name="tiny", size=32, width=0.125, enc_channels=(128, 256, 512), latent=256, dense_channels=256,
        enc_upscale=256, dec_channels=(256, 128), learn_mask=True,
    )  # fmt: skip


def write_encoder(path: Path) -> Path:
    """A fresh tiny encoder in the form the worker stores a guild's bank (``model_args`` + ``state``)."""
    import torch

    from swap_engine.model import FaceBank

    cfg = tiny_model_config()
    torch.save({"model_args": asdict(cfg), "state": FaceBank(cfg).encoder.state_dict()}, path)
    return path


# -----------------------------------------------------------------------------
# tiny media


def cut_clip(src: Path, dst: Path, frames: int, side: int, fps: int = 25) -> Path:
    """The first ``frames`` frames of ``src`` scaled to side x side, as an MP4 (no audio)."""
    from swap_engine.video import VideoWriter, read_frames

    with VideoWriter(dst, side, side, fps) as writer:
        for frame in read_frames(src, max_frames=frames, size=(side, side)):
            writer.write(frame)
    return dst


def faceless_clip(dst: Path, frames: int = 12, side: int = 128) -> Path:
    """Moving colour gradients with a little noise: a valid clip without any face."""
    from swap_engine.video import VideoWriter

    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    with VideoWriter(dst, side, side, 25) as writer:
        for i in range(frames):
            frame = np.stack(
                [np.tile(ramp, (side, 1)), np.tile(ramp[:, None], (1, side)), np.full((side, side), 8.0 * i)],
                axis=-1,
            )
            frame += rng.normal(0, 6, frame.shape)
            writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    return dst


def still_clip(photo: Path, dst: Path, frames: int = 6, longest: int = 480) -> Path:
    """A clip that shows one photo (scaled so its longest side is ``longest`` px) for ``frames`` frames."""
    from swap_engine.video import VideoWriter

    image = cv2.cvtColor(cv2.imread(str(photo), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    scale = longest / max(image.shape[:2])
    width, height = int(image.shape[1] * scale) // 2 * 2, int(image.shape[0] * scale) // 2 * 2
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    with VideoWriter(dst, width, height, 25) as writer:
        for _ in range(frames):
            writer.write(image)
    return dst


def small_photo(src: Path, dst: Path, longest: int = 480) -> Path:
    """A JPEG copy of ``src`` whose longest side is ``longest`` px (faster face detection)."""
    image = cv2.imread(str(src), cv2.IMREAD_COLOR)
    scale = longest / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(dst), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return dst


def count_frames(path: Path) -> int:
    from swap_engine.video import read_frames

    return sum(1 for _ in read_frames(path))


# -----------------------------------------------------------------------------
# child processes (multiprocessing spawn targets)


def checkpoint_often(every_s: float) -> None:
    """Make the trainer write its checkpoint every ``every_s`` seconds instead of once a minute.

    ``pipeline.train_bank`` fixes the interval at 60 s and the worker has no say in it, so a test that kills a
    worker mid-training after a few seconds shortens it here, in the process that trains.
    """
    import swap_engine.train as train

    real = train.TrainConfig

    def config(**kwargs: object) -> object:
        return real(**{**kwargs, "checkpoint_every_s": every_s})

    train.TrainConfig = config  # type: ignore[assignment,misc]


def worker_process(home: str, key: str, model_dir: str, lease_s: float, log_file: str) -> None:
    """A CPU worker with a short lease (1 s heartbeats) whose trainer checkpoints every half second; runs until
    killed."""
    import torch

    torch.set_num_threads(1)  # see conftest.one_torch_thread
    logging.basicConfig(filename=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    checkpoint_often(0.5)
    settings = make_settings(Path(home), Path(key), Path(model_dir))
    asyncio.run(Worker(settings, "cpu", worker_id="doomed", lease_s=lease_s, heartbeat_s=1.0).run())


# -----------------------------------------------------------------------------
# in-process helpers


class RecordingWorker(Worker):
    """A CPU worker that notes each job it runs (in claim order) and whether the job's folder outlived it."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__(settings, "cpu", **options)
        self.ran: list[tuple[int, int]] = []  # (job id, owner id)
        self.leftovers: list[Path] = []

    async def run_job(self, store: Storage, job: Job) -> None:
        self.ran.append((job.id, job.owner_id))
        try:
            await super().run_job(store, job)
        finally:
            folder = self.settings.jobs_dir / str(job.id)
            if folder.exists():
                self.leftovers.append(folder)

    async def drain(self) -> None:
        """Run queued jobs until the queue is empty."""
        await self.run(once=True)


async def wait_job(
    store: Storage,
    job_id: int,
    ready: Callable[[Job], bool],
    *,
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
) -> Job:
    """Poll ``store.get_job`` until ``ready(job)``; returns that job. ``alive()`` false (a process died) fails early."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        job = await store.get_job(job_id)
        if ready(job):
            return job
        if alive is not None and not alive():
            raise AssertionError(f"the worker exited before {what}; job is {job.status.value}: {job.error}")
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s; job: {job}")
        await asyncio.sleep(0.1)
