"""Landmark speed: frames per second of the MediaPipe face landmarker in VIDEO mode on a clip, and per photo.

    .venv/bin/python benchmarks/bench_landmarks.py                    # first 150 frames of scene_woman_room_720p.mp4
    .venv/bin/python benchmarks/bench_landmarks.py --frames 60 --tiles always --threads 1

Frames are decoded first (the decode time is printed apart) so the landmark figure is the detector alone. Photo
figures are per photo in IMAGE mode, after one warm-up call. Also prints the alignment (256 px crop) cost per face.
``--threads`` caps the CPU threads (OMP/TFLite) so runs on a shared machine can be compared.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: import the checkout's packages
    sys.path.insert(0, str(REPO))


def main() -> None:
    shared = Path(os.environ.get("FAMSWAP_SHARED_DIR", REPO.parent / "shared"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150, help="how many frames of the clip (default 150)")
    parser.add_argument("--clip", type=Path, default=shared / "media" / "clips" / "scene_woman_room_720p.mp4")
    parser.add_argument("--photos", type=Path, default=shared / "media" / "photos")
    parser.add_argument(
        "--model", type=Path, default=Path(os.environ.get("FAMSWAP_MODEL_DIR", shared / "models"))
    )
    parser.add_argument("--tiles", choices=("never", "empty", "always"), default="empty")
    parser.add_argument("--max-faces", type=int, default=1)
    parser.add_argument("--min-confidence", type=float, default=0.5, help="0.8 is what face sets use")
    parser.add_argument("--threads", type=int, default=None, help="limit CPU threads (sets OMP_NUM_THREADS)")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from swap_engine import align
    from swap_engine.assets import landmarker_path
    from swap_engine.landmarks import LandmarkDetector
    from swap_engine.media import load_image
    from swap_engine.video import probe, read_frames

    model = landmarker_path(args.model, download=False)
    info = probe(args.clip)
    start = time.perf_counter()
    frames = list(itertools.islice(read_frames(args.clip, max_frames=args.frames), args.frames))
    decode_s = time.perf_counter() - start
    print(
        f"clip {args.clip.name}: {info.width}x{info.height} @ {float(info.fps):.2f} fps, {len(frames)} frames"
    )
    print(f"  decode            {len(frames) / decode_s:8.1f} frames/s")

    with LandmarkDetector(
        model, video=True, max_faces=args.max_faces, tiles=args.tiles, min_confidence=args.min_confidence
    ) as detector:
        detector.detect(frames[0], 0)  # warm-up: graph start, first detection
        found = []
        start = time.perf_counter()
        for i, frame in enumerate(frames[1:], start=1):
            found.append(detector.detect(frame, round(i * 1000 / float(info.fps))))
        video_s = time.perf_counter() - start
    with_face = sum(1 for faces in found if faces)
    print(
        f"  landmarks (VIDEO) {len(found) / video_s:8.1f} frames/s  ({1000 * video_s / len(found):.1f} ms/frame, "
        f"face in {with_face}/{len(found)} frames, tiles={args.tiles})"
    )
    pairs = [(frame, faces[0]) for frame, faces in zip(frames[1:], found, strict=True) if faces]
    if pairs:
        start = time.perf_counter()
        for frame, face in pairs:
            align.align_face(frame, face, 256)
        print(f"  align 256 px      {1000 * (time.perf_counter() - start) / len(pairs):8.2f} ms/face")

    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    print(f"photos in {args.photos} (IMAGE mode, ms per photo, median of 5):")
    with LandmarkDetector(
        model, max_faces=4, tiles=args.tiles, min_confidence=args.min_confidence
    ) as detector:
        for path in photos:
            image = load_image(path)
            faces = detector.detect(image)  # warm-up
            times = []
            for _ in range(5):
                start = time.perf_counter()
                detector.detect(image)
                times.append(time.perf_counter() - start)
            shape = f"{image.shape[1]}x{image.shape[0]}"
            print(
                f"  {path.name:26s} {shape:>10s} {1000 * statistics.median(times):7.1f} ms  {len(faces)} face(s)"
            )


if __name__ == "__main__":
    main()
