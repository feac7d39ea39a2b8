"""Conversion speed: frames/s of the swap's scan and convert stages on a 720p clip, against a bare ffmpeg transcode.

What it runs, in this order, on ``--clip`` (default: the shared 720p "movie" clip):

- bare: the same ffmpeg binary transcoding the clip with the settings our writer uses (libx264 veryfast, crf 20,
  audio copied): the floor any pipeline that re-encodes the video pays. Median of ``--repeats``.
- scan: ``pipeline.scan_video`` (MediaPipe landmarks on every frame, tracks, cuts): the "landmarks" stage.
- a small bank: the ``--model`` preset (default ``lite``, what a CPU trains), both decoders trained for
  ``--train-seconds`` on the clip's own actor faces. Conversion speed does not depend on how well it is trained.
- convert: ``convert.convert_clip`` with the shipped defaults (the hair segmenter from ``--model-dir``, as the worker
  and ``famswap swap`` run it; no size limit, so no re-encode at the end), and ``ConvertReport.timings`` per frame.
  The person's own detail (``person_detail.py``) needs their face set: ``--faceset DIR`` turns it on as a swap has it.
  Conversion overlaps its stages (see ``swap_engine/convert.py``): the converting thread's own work (align, model,
  blend) and its waits (decode, hair wait, encode wait) add up to about its wall time; the hair segmenter's and the
  writer thread's busy times (hair; label, encode) run beside them.

    .venv/bin/python benchmarks/bench_convert.py                      # about 1 min on 2 busy cores
    .venv/bin/python benchmarks/bench_convert.py --clip other.mp4 --threads 2 --json
    python3 benchmarks/bench_convert.py --model hires --device cuda --json-out convert.json   # on a GPU
    python3 benchmarks/bench_convert.py --scan clip.scan.npz --no-hair   # without mediapipe (pipeline.save_scan)

The numbers are wall clock on whatever else the machine is doing: run it twice on a shared box.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_CLIP = Path(__file__).resolve().parents[2] / "shared" / "media" / "clips" / "scene_woman_room_720p.mp4"
DEFAULT_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


def bare_transcode(ffmpeg: str, clip: Path, out: Path, repeats: int) -> float:
    """Median seconds of ``ffmpeg -i clip`` → H.264 with our writer's settings, audio copied."""
    cmd = [ffmpeg, "-v", "error", "-y", "-i", str(clip), "-map", "0:v:0", "-map", "0:a?",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-c:a", "copy", str(out)]  # fmt: skip
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODELS,
                        help="folder of face_landmarker.task and hair_segmenter.tflite")
    parser.add_argument("--no-hair", action="store_true", help="convert without the hair segmenter (landmark hull)")
    parser.add_argument("--model", default="lite", choices=("lite", "original", "hires"))
    parser.add_argument("--train-seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3, help="bare transcodes (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="where the bank trains and converts: cpu, cuda, cuda:N")
    parser.add_argument("--scan", type=Path, default=None,
                        help="a scan saved by pipeline.save_scan instead of scanning (no mediapipe needed with --no-hair)")
    parser.add_argument("--faceset", type=Path, default=None,
                        help="a face-set folder (as enrollment writes it): the person's own detail on, as a swap "
                             "does; without it, off")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--json-out", type=Path, default=None, help="also write that JSON line to this file")
    args = parser.parse_args()

    import torch

    from swap_engine import pipeline
    from swap_engine.assets import hair_segmenter_path, landmarker_path
    from swap_engine.convert import ConvertOptions, convert_clip
    from swap_engine.ffmpeg_bin import find_ffmpeg
    from swap_engine.video import probe

    if args.threads:
        torch.set_num_threads(args.threads)
    tools = find_ffmpeg()
    info = probe(args.clip, count_frames=True, tools=tools)
    n = info.frame_count
    print(f"clip: {args.clip.name} {info.width}x{info.height} {info.fps} fps, {n} frames, {info.duration:.2f} s; "
          f"ffmpeg {tools.source}; torch {torch.__version__}, {torch.get_num_threads()} threads; model {args.model}")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t_bare = bare_transcode(tools.ffmpeg, args.clip, work / "bare.mp4", args.repeats)

        t_scan: float | None = None
        if args.scan is not None:
            scan = pipeline.load_scan(args.scan)
        else:
            start = time.perf_counter()
            scan = pipeline.scan_video(args.clip, landmarker_path(args.model_dir, download=False, progress=False))
            t_scan = time.perf_counter() - start

        actor = pipeline.extract_actor(args.clip, scan, 0, work / "actor.npz")
        plan = pipeline.TrainPlan(
            faces={"person": actor, "actor": actor}, bank_path=work / "bank.pt", checkpoint=work / "train.ckpt",
            model=args.model, device=args.device, seconds=args.train_seconds,
        )  # fmt: skip
        result = pipeline.train_bank(plan)
        from swap_engine.model import load_bank

        bank, _ = load_bank(plan.bank_path)
        hair = None if args.no_hair else hair_segmenter_path(args.model_dir, download=False, progress=False)
        opts = ConvertOptions(identity="person", max_bytes=None, hair_model=hair, device=args.device,
                              faceset=args.faceset)  # fmt: skip
        report = convert_clip(args.clip, bank, scan, work / "out.mp4", opts)
    t = report.timings
    t_convert = t["total"]

    print(f"bank: {args.model} on {args.device}, {result.step} training steps in {args.train_seconds:g} s "  # type: ignore[attr-defined]
          "(speed does not depend on it)")
    print(f"hair segmenter: {'off' if hair is None else hair.name}; "
          f"person detail: {'off (no --faceset)' if args.faceset is None else args.faceset}")
    print(f"faces: {report.swapped} of {report.frames} frames swapped, skipped {report.skipped or 'none'}")
    print()
    print(f"{'stage':34} {'seconds':>8} {'frames/s':>9} {'x bare':>7}")
    rows = [("bare ffmpeg transcode (same x264)", t_bare), ("convert", t_convert)]
    if t_scan is not None:
        rows[1:1] = [("scan (landmarks, tracks)", t_scan)]
        rows.append(("scan + convert", t_scan + t_convert))
    else:
        print(f"{'scan':34} {'(read from ' + args.scan.name + ')':>26}")
    for name, sec in rows:
        print(f"{name:34} {sec:8.2f} {n / sec:9.1f} {sec / t_bare:7.1f}")
    print()
    print("where the time goes (per frame, ms)")
    if t_scan is not None:
        print(f"  {'landmarks (the scan stage)':34} {1000 * t_scan / n:7.1f}")
    own = ["decode", "align", "hair_wait", "model", "blend", "encode_wait"]
    beside = ["hair", "label", "encode"]
    rest = max(0.0, t_convert - sum(t.get(k, 0.0) for k in own))
    print("  converting thread (its work and its waits):")
    for key in own:
        print(f"    {key:32} {1000 * t.get(key, 0.0) / n:7.1f}")
    print(f"    {'rest (finish, mux, bookkeeping)':32} {1000 * rest / n:7.1f}")
    print("  beside it (segmenter threads, writer thread):")
    for key in beside:
        print(f"    {key:32} {1000 * t.get(key, 0.0) / n:7.1f}")
    figures = {
        "clip": args.clip.name, "frames": n, "model": args.model, "device": args.device, "hair": hair is not None,
        "threads": torch.get_num_threads(), "bare_s": round(t_bare, 3),
        "scan_s": None if t_scan is None else round(t_scan, 3), "convert_s": round(t_convert, 3),
        "convert_fps": round(n / t_convert, 2),
        "scan_convert_fps": None if t_scan is None else round(n / (t_scan + t_convert), 2),
        "bare_fps": round(n / t_bare, 2), "timings": t,
    }  # fmt: skip
    if args.json:
        print(json.dumps(figures))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(figures) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
