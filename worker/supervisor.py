"""Worker processes under a supervisor: one per GPU (or one on the CPU), restarted with backoff when they die,
stopped with SIGTERM (checkpoint, hand the job back) then SIGKILL; and a worker's watch on its parent."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from common.config import Settings

log = logging.getLogger("famswap.supervisor")


def worker_devices(settings: Settings) -> list[str]:
    """One worker per visible GPU, or a single CPU worker; FAMSWAP_DEVICE pins one device."""
    if settings.device != "auto":
        return [settings.device]
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover - torch is a dependency
        count = 0
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]


@dataclass
class WorkerProcess:
    """A worker child process and when it may next be restarted (backoff after quick deaths)."""

    device: str
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = field(default=0.0)

    def start(self) -> None:
        command = [sys.executable, "-m", "famswap.cli", "worker", "--device", self.device, "--parent-pid", str(os.getpid())]
        self.process = subprocess.Popen(command, env=os.environ.copy())
        self.started_at = time.monotonic()
        log.info("started a worker on %s (pid %d)", self.device, self.process.pid)

    def check(self) -> None:
        """Restart the worker if it died; back off up to a minute when it keeps dying right after starting."""
        now = time.monotonic()
        if self.process is None:
            if now >= self.next_start:
                self.start()
            return
        code = self.process.poll()
        if code is None:
            return
        lived = now - self.started_at
        self.restarts = 0 if lived > 120 else self.restarts + 1
        delay = min(60.0, 2.0**self.restarts)
        log.warning("the worker on %s stopped (exit %s); restarting in %.0f s", self.device, code, delay)
        self.process = None
        self.next_start = now + delay

    def terminate(self) -> None:
        """SIGTERM: the worker checkpoints its job and hands it back, then exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float) -> None:
        """Wait for a worker asked to stop; SIGKILL it after ``timeout``."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the worker on %s did not stop in %.0f s; killing it", self.device, timeout)
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM lets the worker checkpoint and hand its job back; SIGKILL after ``timeout``."""
        self.terminate()
        self.wait_stopped(timeout)


def stop_workers(workers: list[WorkerProcess], timeout: float = 30.0) -> None:
    """Stop every worker within one ``timeout``: all are asked at once, not each after the previous one's checkpoint."""
    for w in workers:
        w.terminate()
    deadline = time.monotonic() + timeout
    for w in workers:
        w.wait_stopped(max(0.0, deadline - time.monotonic()))


def exit_with_parent(parent_pid: int, interval: float = 1.0) -> bool:
    """In a worker started by `famswap run`: stop cleanly (SIGTERM to itself: checkpoint, hand the job back) once
    the parent is gone without having stopped it (SIGKILL, the OOM killer, a crash). An orphaned worker would
    otherwise keep its device and its job while a restarted `famswap run` starts another worker beside it.
    Returns False when the parent is already gone."""
    if os.getppid() != parent_pid:
        return False

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        logging.getLogger("famswap.worker").warning("famswap run (pid %d) is gone; stopping this worker", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="famswap-parent-watch", daemon=True).start()
    return True


async def supervise(workers: list[WorkerProcess]) -> None:
    while True:
        for w in workers:
            w.check()
        await asyncio.sleep(1.0)
