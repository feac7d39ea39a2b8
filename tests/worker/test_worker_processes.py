"""Real worker processes stopped mid-training: SIGKILL (a crash) and SIGTERM (a shutdown, through `famswap worker`).
Another worker then finishes the job from its stored checkpoint instead of training from step 0."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import JobKind, JobStatus, open_storage
from swap_engine.train import Trainer
from tests.worker.conftest import Enrolled
from tests.worker.workerkit import (
    ALICE,
    CLIP_FRAMES,
    GUILD,
    RecordingWorker,
    settings_env,
    wait_job,
    worker_process,
)

REPO = Path(__file__).resolve().parents[2]
SPAWN = multiprocessing.get_context("spawn")
# Long enough that the first worker is still training when it is stopped (its first progress report comes after
# about 2 s of training), short enough that the second one finishes the rest quickly.
TRAIN_SECONDS = 6


@pytest.fixture
def trainer_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The step at which each training run in this process starts (after loading a checkpoint, if there is one)."""
    starts: list[int] = []
    run = Trainer.run

    def spy(self: Trainer, *args: object, **kwargs: object) -> object:
        starts.append(self.step)
        return run(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "run", spy)
    return starts


@pytest.fixture
def show_log(tmp_path: Path) -> Iterator[Path]:
    """A log file for the worker process, printed after the test (pytest shows it when the test fails)."""
    path = tmp_path / "worker.log"
    yield path
    if path.exists():
        print(f"--- {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))


@pytest.mark.slow
async def test_a_worker_killed_during_training_is_resumed_from_its_checkpoint(
    enrolled: Enrolled, trainer_starts: list[int], show_log: Path
) -> None:
    settings = enrolled.settings
    lease = 4.0
    async with open_storage(settings, synchronous="NORMAL") as store:
        job = await store.enqueue(
            GUILD, ALICE, JobKind.SWAP, {"train_seconds": TRAIN_SECONDS, "clip_name": "man.mp4"},
            identity_ids=[enrolled.alice], input=enrolled.media.clip,
        )  # fmt: skip
        doomed = SPAWN.Process(
            target=worker_process,
            args=(
                str(settings.home),
                str(settings.key_path),
                str(settings.models_path),
                lease,
                str(show_log),
            ),
            daemon=True,
        )
        doomed.start()
        try:
            await wait_job(
                store, job.id, lambda j: j.state.get("train_step", 0) > 0 and j.checkpoint is not None,
                timeout=120, what="a stored training checkpoint", alive=doomed.is_alive,
            )  # fmt: skip
        finally:
            os.kill(doomed.pid, signal.SIGKILL)  # type: ignore[arg-type]
            doomed.join(30)
        assert doomed.exitcode == -signal.SIGKILL
        killed = await store.get_job(job.id)
        assert killed.status is JobStatus.RUNNING and killed.worker_id == "doomed"
        assert killed.state["stage"] == "train", killed.state

        # Nobody heartbeats any more: once the lease runs out, the next worker takes the job over.
        await wait_job(store, job.id, lambda j: j.lease_expires_at.timestamp() < time.time(),  # type: ignore[union-attr]
                       timeout=lease + 5, what="the lease to run out")  # fmt: skip
        worker = RecordingWorker(settings)
        await worker.drain()
        done = await store.get_job(job.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        report = (await store.get_result(GUILD, job.id, ALICE)).report
    assert worker.ran == [(job.id, ALICE)] and done.attempts == 2
    # The stored state names the step of the last progress report; the checkpoint beside it is at most that far.
    assert len(trainer_starts) == 1 and 0 < trainer_starts[0] <= killed.state["train_step"]
    assert report["train_step"] > trainer_starts[0] and report["frames"] == CLIP_FRAMES
    assert worker.leftovers == []


@pytest.mark.slow
async def test_sigterm_checkpoints_exits_cleanly_and_the_job_resumes(
    enrolled: Enrolled, trainer_starts: list[int], show_log: Path
) -> None:
    settings = enrolled.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAMSWAP_")}
    env.update(settings_env(settings), OMP_NUM_THREADS="1")  # one torch thread: see conftest.one_torch_thread
    async with open_storage(settings, synchronous="NORMAL") as store:
        job = await store.enqueue(
            GUILD, ALICE, JobKind.SWAP, {"train_seconds": TRAIN_SECONDS, "clip_name": "man.mp4"},
            identity_ids=[enrolled.alice], input=enrolled.media.clip,
        )  # fmt: skip
        with show_log.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "famswap.cli", "worker", "--device", "cpu"],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                await wait_job(store, job.id, lambda j: j.progress.stage == "train", timeout=120,
                               what="training", alive=lambda: proc.poll() is None)  # fmt: skip
                proc.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(proc.wait, 60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert code == 0
        stopped = await store.get_job(job.id)
        # Handed back at once with its checkpoint, the attempt not counted; its folder is gone.
        assert stopped.status is JobStatus.QUEUED and stopped.attempts == 0 and stopped.worker_id is None
        assert stopped.state["stage"] == "train" and stopped.state["train_step"] > 0
        assert stopped.checkpoint is not None
        assert not (settings.jobs_dir / str(job.id)).exists()

        worker = RecordingWorker(settings)
        await worker.drain()
        done = await store.get_job(job.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        report = (await store.get_result(GUILD, job.id, ALICE)).report
    assert trainer_starts == [stopped.state["train_step"]]  # exactly where the stopped worker left off
    assert report["train_step"] > trainer_starts[0] and report["frames"] == CLIP_FRAMES
    assert worker.leftovers == []
