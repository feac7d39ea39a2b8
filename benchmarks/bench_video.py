"""Video I/O throughput: decode frames/s, encode frames/s, and our decode+encode against a bare ffmpeg transcode.

- decode: ``read_frames`` over the whole clip (raw RGB24 through a pipe into numpy arrays).
- encode: ``VideoWriter`` fed frames already in memory (the first ``--cache`` frames, cycled to the clip's length).
- pipeline: ``read_frames`` -> ``VideoWriter(audio_from=clip)``, what the convert stage does minus the swapping,
  against the same ffmpeg binary transcoding the file by itself: once with its defaults (``ffmpeg -i in out.mp4``:
  libx264 preset medium, crf 23, AAC re-encode) and once with our settings (veryfast, crf 20, audio copied).

    .venv/bin/python benchmarks/bench_video.py                       # the 720p shared clip, ~30-60 s on 2 cores
    .venv/bin/python benchmarks/bench_video.py --clip some.mp4 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swap_engine.ffmpeg_bin import find_ffmpeg  # noqa: E402
from swap_engine.video import VideoWriter, probe, read_frames  # noqa: E402

DEFAULT_CLIP = Path(__file__).resolve().parents[2] / "shared" / "media" / "clips" / "scene_woman_room_720p.mp4"


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cache", type=int, default=60, help="frames held in memory for the encode-only run")
    args = parser.parse_args()

    tools = find_ffmpeg()
    info = probe(args.clip, count_frames=True, tools=tools)
    frames_n = info.frame_count
    print(f"clip: {args.clip.name} {info.width}x{info.height} {info.fps} fps, {frames_n} frames, {info.duration:.2f} s")
    print(f"ffmpeg: {tools.source} {tools.version}")

    def decode() -> None:
        for _ in read_frames(args.clip, info=info, tools=tools):
            pass

    cache = list(read_frames(args.clip, max_frames=args.cache, info=info, tools=tools))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def encode() -> None:
            with VideoWriter(out / "enc.mp4", info.width, info.height, info.fps, tools=tools) as writer:
                for i in range(frames_n):
                    writer.write(cache[i % len(cache)])

        def pipeline() -> None:
            audio = args.clip if info.has_audio else None
            with VideoWriter(out / "ours.mp4", info.width, info.height, info.fps, audio_from=audio, tools=tools) as w:
                for frame in read_frames(args.clip, info=info, tools=tools):
                    w.write(frame)

        def bare(*codec: str) -> Callable[[], None]:
            cmd = [tools.ffmpeg, "-v", "error", "-y", "-i", str(args.clip), *codec, str(out / "bare.mp4")]
            return lambda: subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)

        t_decode = timed(decode, args.repeats)
        t_encode = timed(encode, args.repeats)
        t_ours = timed(pipeline, args.repeats)
        t_bare_default = timed(bare(), args.repeats)
        t_bare_same = timed(bare("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-c:a", "copy"), args.repeats)

    print(f"decode   read_frames:            {frames_n / t_decode:7.1f} frames/s  ({t_decode:.2f} s)")
    print(f"encode   VideoWriter (no audio): {frames_n / t_encode:7.1f} frames/s  ({t_encode:.2f} s)")
    print(f"ours     read_frames->VideoWriter:{frames_n / t_ours:6.1f} frames/s  ({t_ours:.2f} s)")
    print(f"bare     ffmpeg -i in out.mp4:   {frames_n / t_bare_default:7.1f} frames/s  ({t_bare_default:.2f} s)"
          f"  ours/bare = {t_ours / t_bare_default:.2f}x time")
    print(f"bare     same settings as ours:  {frames_n / t_bare_same:7.1f} frames/s  ({t_bare_same:.2f} s)"
          f"  ours/bare = {t_ours / t_bare_same:.2f}x time")


if __name__ == "__main__":
    main()
