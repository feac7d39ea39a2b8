"""What a job handler gets and gives back: ``JobContext`` (the job, its folder, storage from the engine thread,
cancel and shutdown flags) and ``Outcome``; plus the helpers every handler shares (caps on user videos, resume
points, face sets from storage, file names as the user sent them)."""

from __future__ import annotations

import asyncio
import re
import tarfile
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from common.config import Settings
from common.errors import JobCancelled, NoFaceFound
from storage import WARM_READY_STEPS, Identity, Job, JobKind, JobSpec, Storage, SwapJob, TrainJob, WarmJob
from swap_engine import pipeline
from swap_engine.faceset import unpack_faceset
from swap_engine.video import VideoInfo, probe

S = TypeVar("S", bound=JobSpec)

# Where each stage's progress lies in a swap's (or a prepare's) 0-100 %, the figure the bot shows; a train job is
# all training. The command line draws a bar per stage from the stage's own fraction (``JobContext.on_progress``).
STAGE_SPANS: dict[str, tuple[float, float]] = {
    "faces": (0.0, 100.0),  # prepare
    "scan": (0.0, 15.0),
    "actor": (15.0, 20.0),
    "train": (20.0, 80.0),
    "convert": (80.0, 99.0),
}

ProgressHook = Callable[[str, float, str], None]  # (stage, fraction of the stage done in [0, 1], message)


def stage_percent(kind: JobKind, stage: str, fraction: float) -> float | None:
    """A job's percent when ``fraction`` of ``stage`` is done (None for a stage without a place)."""
    if kind in (JobKind.TRAIN, JobKind.WARM):
        start, end = 0.0, 100.0
    elif stage in STAGE_SPANS:
        start, end = STAGE_SPANS[stage]
    else:
        return None
    return start + (end - start) * min(1.0, max(0.0, fraction))


class Interrupted(Exception):
    """The worker is shutting down (SIGTERM): the job was checkpointed and goes back to the queue."""


@dataclass
class JobContext:
    """What a stage needs while it runs in the worker's thread: the job, its folder, and ways to talk to storage."""

    store: Storage
    job: Job
    worker_id: str
    folder: Path
    loop: asyncio.AbstractEventLoop
    device: str
    settings: Settings
    cancelled: threading.Event = field(default_factory=threading.Event)
    shutting_down: threading.Event = field(default_factory=threading.Event)
    preempted: threading.Event = field(default_factory=threading.Event)  # another job waits (warm jobs only)
    on_progress: ProgressHook | None = None  # the command line's bars; called from the engine thread

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a storage coroutine on the worker's event loop from the engine thread and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def should_stop(self) -> bool:
        return self.cancelled.is_set() or self.shutting_down.is_set()

    def check(self) -> None:
        """Raise at a safe point if the job was cancelled or the worker is stopping."""
        if self.cancelled.is_set():
            raise JobCancelled("The job was cancelled.")
        if self.shutting_down.is_set():
            raise Interrupted()

    def progress(self, stage: str, fraction: float, message: str, preview: bytes | None = None, *,
                 check: bool = True) -> None:
        """Report ``fraction`` of ``stage`` done (to storage, where the bot reads it, and to ``on_progress``);
        with ``check``, first raise if the job was cancelled or the worker is stopping."""
        if check:
            self.check()
        if self.on_progress is not None:
            self.on_progress(stage, fraction, message)
        percent = stage_percent(self.job.kind, stage, fraction)
        self.call(
            self.store.report_progress(
                self.job.id, self.worker_id, stage=stage, percent=percent, message=message, preview=preview
            )
        )

    def save_state(self, state: dict[str, Any], checkpoint: Path | None = None) -> None:
        self.call(self.store.save_checkpoint(self.job.id, self.worker_id, state, checkpoint=checkpoint))

    def spec(self, kind: type[S]) -> S:
        """The job's typed payload, which must be a ``kind`` (each handler asks for its own)."""
        payload = self.job.payload
        if not isinstance(payload, kind):
            raise TypeError(f"job {self.job.id} carries a {type(payload).__name__}, not a {kind.__name__}")
        return payload

    def model_name(self) -> str:
        """The model to train: the job's choice, else the setting, else the device's default."""
        spec = self.job.payload
        chosen = spec.model if isinstance(spec, SwapJob | TrainJob | WarmJob) else None
        return pipeline.choose_model(chosen, self.settings.model, self.device)


@dataclass
class Outcome:
    """What a finished job hands to storage."""

    video: Path | None = None
    comparison: Path | bytes | None = None
    report: dict[str, Any] = field(default_factory=dict)
    expires_in: float | None = None  # seconds the result is kept, when less than FAMSWAP_RESULT_DAYS


def check_video(path: Path, settings: Settings) -> VideoInfo:
    """A user's video against every cap (length, pixels, frame rate, frames), before any frame is decoded; returns
    its ``VideoInfo``. ``MediaTooLarge`` / ``UnsupportedMedia`` with a message naming the file."""
    return probe(path, max_seconds=settings.max_clip_seconds, max_pixels=settings.max_clip_pixels,
                 max_fps=settings.max_clip_fps, max_frames=settings.max_clip_frames)


def safe_suffix(filename: str) -> str:
    """The file's extension when it is a plain short one (".jpg", ".mp4"), else none: decoders sniff the content."""
    suffix = Path(filename).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ""


def named(text: str, stored: str, shown: str) -> str:
    """A message about a file, naming it as the user sent it rather than as this job stored it."""
    return text.replace(stored, shown)


def train_seconds(ctx: JobContext) -> float:
    """The training budget: the payload's override, else by device and quality, shortened to
    ``FAMSWAP_WARM_SWAP_SHARE`` for a swap whose person's decoder is warm (``Settings.swap_train_seconds``)."""
    spec = ctx.job.payload
    if isinstance(spec, SwapJob | TrainJob) and spec.train_seconds:
        return float(spec.train_seconds)
    if not isinstance(spec, SwapJob):
        return ctx.settings.train_seconds(ctx.device)
    return ctx.settings.swap_train_seconds(ctx.device, spec.quality, warm=person_is_warm(ctx))


def person_is_warm(ctx: JobContext) -> bool:
    """Whether every person of the swap has a decoder that trained at least ``WARM_READY_STEPS`` on their current
    faces."""
    bank = ctx.call(ctx.store.get_bank(ctx.job.guild_id))
    if bank is None or bank.encoder is None:
        return False
    return all(bank.trained_steps.get(i, 0) >= WARM_READY_STEPS
               and bank.decoder_versions.get(i) == ctx.call(ctx.store.get_identity(ctx.job.guild_id, i)).faceset_version
               for i in ctx.job.identity_ids)


def identity_faces(ctx: JobContext, identity: Identity) -> Path:
    if identity.faceset is None:
        raise NoFaceFound(
            f"{identity.display_name} has no face set yet.", hint="Wait for /enroll to finish, or enroll again."
        )
    archive = ctx.call(ctx.store.decrypt_to(identity.faceset, ctx.folder / f"faceset-{identity.id}.tar"))
    folder = unpack_faceset(archive, ctx.folder / f"faceset-{identity.id}")
    archive.unlink()
    return folder


def pack_state(ctx: JobContext, names: list[str]) -> Path:
    archive = ctx.folder / "resume.tar"
    with tarfile.open(archive, "w") as tar:
        for name in names:
            if (ctx.folder / name).is_file():
                tar.add(ctx.folder / name, arcname=name)
    return archive


def restore_state(ctx: JobContext) -> dict[str, Any]:
    """Bring back the files of the last resume point (if any) and return the saved state."""
    job = ctx.job
    if job.checkpoint is not None:
        archive = ctx.call(ctx.store.decrypt_to(job.checkpoint, ctx.folder / "resume.tar"))
        with tarfile.open(archive, "r") as tar:
            for member in tar.getmembers():
                if member.isfile() and "/" not in member.name:
                    source = tar.extractfile(member)
                    assert source is not None
                    (ctx.folder / member.name).write_bytes(source.read())
        archive.unlink()
    return dict(job.state)

