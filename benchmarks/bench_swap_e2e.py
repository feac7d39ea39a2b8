"""End to end: how long a default swap takes through the worker on this machine, with the time of each stage.

    .venv/bin/python benchmarks/bench_swap_e2e.py                      # scene_woman_room_720p.mp4 as selfie_man
    .venv/bin/python benchmarks/bench_swap_e2e.py --quality best       # the full CPU budget instead of a quarter
    .venv/bin/python benchmarks/bench_swap_e2e.py --train-minutes 0.5 --out /tmp/swap.mp4

What the bot has done by the time a swap is posted: an enroll (a prepare job on the selfie video) and a swap job on
the clip, each run here by the real worker (``Worker.run(once=True)``) against a fresh data home in a temp folder,
with the default settings (FAMSWAP_* variables in the environment still apply): the device's default model (lite on
a CPU), FAMSWAP_TRAIN_MINUTES_CPU (10) for quality preview, three times that for best, the 10 MB output
limit. Stage times come from wrapping the engine calls the worker makes; "storage and the rest" is what is left
of a job (decrypting inputs, encrypting checkpoints and results, progress rows, model loading).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: import the checkout's packages
    sys.path.insert(0, str(REPO))

GUILD, USER = 1, 1


class Stages:
    """Seconds spent in each wrapped engine call, and what the last call returned."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.returned: dict[str, Any] = {}
        self.args: dict[str, tuple[Any, ...]] = {}

    def wrap(self, module: Any, attribute: str, stage: str) -> None:
        real: Callable[..., Any] = getattr(module, attribute)

        @functools.wraps(real)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = real(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
            self.returned[stage], self.args[stage] = result, args
            return result

        setattr(module, attribute, timed)


def main() -> None:
    shared = Path(os.environ.get("FAMSWAP_SHARED_DIR", REPO.parent / "shared"))
    clips = shared / "media" / "clips"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=clips / "scene_woman_room_720p.mp4")
    parser.add_argument(
        "--selfie", type=Path, default=clips / "selfie_man.mp4", help="who goes into the clip"
    )
    parser.add_argument(
        "--quality", choices=("preview", "best"), default=None, help="default: FAMSWAP_QUALITY"
    )
    parser.add_argument(
        "--train-minutes",
        type=float,
        default=None,
        help="training budget (default: the worker's, by device and quality)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=None, help="also write the finished MP4 here")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="famswap-bench-") as tmp:
        asyncio.run(run(args, shared, Path(tmp)))


async def run(args: argparse.Namespace, shared: Path, tmp: Path) -> None:
    import torch

    import swap_engine.convert
    import swap_engine.faceset
    from common.config import Settings
    from storage import JobKind, JobStatus, UploadKind, open_storage
    from swap_engine import pipeline
    from swap_engine.video import probe
    from worker.loop import Worker

    if args.threads:
        torch.set_num_threads(args.threads)
    env = {k: v for k, v in os.environ.items() if k.startswith("FAMSWAP_")}
    env.update(
        FAMSWAP_HOME=str(tmp / "home"), FAMSWAP_KEY_FILE=str(tmp / "famswap.key"), FAMSWAP_DEVICE=args.device
    )
    env.setdefault("FAMSWAP_MODEL_DIR", str(shared / "models"))
    settings = Settings.load(env, env_file=tmp / "no.env")
    quality = args.quality or settings.quality

    stages = Stages()
    stages.wrap(swap_engine.faceset, "build_faceset", "faces")
    stages.wrap(pipeline, "scan_video", "scan")
    stages.wrap(pipeline, "extract_actor", "actor")
    stages.wrap(pipeline, "train_bank", "train")
    stages.wrap(swap_engine.convert, "convert_clip", "convert")

    worker = Worker(settings, settings.device, worker_id="bench")
    info = probe(args.clip)
    load_before = os.getloadavg()
    print(
        f"famswap end-to-end swap on {worker.device} ({torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before)"
    )
    print(
        f"clip   {args.clip.name}: {info.width}x{info.height}, {info.frame_count} frames, {info.duration:.1f} s"
    )
    print(f"person {args.selfie.name}")

    payload: dict[str, Any] = {"quality": quality, "clip_name": args.clip.name}
    if args.train_minutes is not None:
        payload["train_seconds"] = args.train_minutes * 60.0
    async with open_storage(settings) as store:
        identity = await store.create_identity(GUILD, USER, "Benchmark")
        await store.add_upload(
            GUILD, identity.id, USER, args.selfie, kind=UploadKind.VIDEO, filename=args.selfie.name
        )
        prepare = await store.enqueue(
            GUILD, USER, JobKind.PREPARE, {}, identity_ids=[identity.id], enforce_quota=False
        )
        start = time.perf_counter()
        await worker.run(once=True)
        enroll_s = time.perf_counter() - start
        prepared = await store.get_job(prepare.id)
        if prepared.status is not JobStatus.SUCCEEDED:
            raise SystemExit(f"enroll failed: {prepared.error}")

        swap = await store.enqueue(
            GUILD,
            USER,
            JobKind.SWAP,
            payload,
            identity_ids=[identity.id],
            input=args.clip,
            enforce_quota=False,
        )
        start = time.perf_counter()
        await worker.run(once=True)
        swap_s = time.perf_counter() - start
        swapped = await store.get_job(swap.id)
        if swapped.status is not JobStatus.SUCCEEDED:
            raise SystemExit(f"swap failed: {swapped.error}")
        result = await store.get_result(GUILD, swap.id, USER)
        if args.out is not None and result.video is not None:
            await store.decrypt_to(result.video, args.out)

    faceset = stages.returned["faces"]
    scan = stages.returned["scan"]
    trained = stages.returned["train"]
    plan = stages.args["train"][0]
    report = result.report
    timings = report.get("timings", {})
    budget = "the --train-minutes override" if args.train_minutes is not None else (
        f"FAMSWAP_TRAIN_MINUTES_{'GPU' if worker.device.startswith('cuda') else 'CPU'} x "
        f"{'3' if quality == 'best' else '1'} for quality {quality}")  # fmt: skip
    print(f"model  {plan.model}; training budget {plan.seconds:.0f} s ({budget})")
    print()

    def line(name: str, seconds: float, note: str = "") -> None:
        print(f"  {name:<22} {seconds:8.1f} s   {note}")

    print(f"enroll (prepare job)     {enroll_s:8.1f} s")
    line("faces", stages.seconds["faces"], f"{len(faceset.kept)} faces kept")
    line("storage and the rest", enroll_s - stages.seconds["faces"])
    print(f"swap (swap job)          {swap_s:8.1f} s")
    engine = 0.0
    notes = {
        "scan": f"{len(scan.tracks)} face track(s) in {scan.frame_count} frames",
        "actor": "",
        "train": f"{trained.step} steps, {trained.samples_per_s:.1f} faces/s, stopped by {trained.stopped}",
        "convert": ", ".join(
            f"{k} {v:.1f}" for k, v in timings.items() if k not in ("total", "total_pipeline")
        ),
    }
    for stage in ("scan", "actor", "train", "convert"):
        seconds = stages.seconds.get(stage, 0.0)
        engine += seconds
        line(stage, seconds, notes[stage])
    line("storage and the rest", swap_s - engine)
    print()
    print(
        f"output {report['frames']} frames, {report['swapped']} swapped, {report['bytes'] / 1e6:.1f} MB"
        f"{' (fitted to the size limit)' if report.get('fitted') else ''}"
    )
    print(
        f"total  {enroll_s + swap_s:.1f} s end to end ({swap_s:.1f} s for the swap job alone); "
        f"load average {os.getloadavg()[0]:.1f} after"
    )


if __name__ == "__main__":
    main()
