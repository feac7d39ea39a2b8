"""Who is in each shared clip: tracks → people, cuts found, and what a face embedding costs.

    FAMSWAP_MODEL_DIR=../shared/models python benchmarks/bench_people.py [CLIP ...]

Prints per clip: frames, cuts (frame numbers), tracks (frames each covers), the person each track was grouped into
and the people offered (numbered as on the contact sheet); then the embedding's cost per face, measured on the faces
the scan embedded. Nothing is written.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from swap_engine import pipeline, video
from swap_engine.embed import FaceEmbedder, distances
from swap_engine.track import embedding_frames

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "clips"


def main(argv: list[str]) -> int:
    model_dir = Path(os.environ.get("FAMSWAP_MODEL_DIR", "../shared/models"))
    clips = [Path(a) for a in argv] or sorted(MEDIA.glob("*.mp4"))
    embedder = FaceEmbedder()
    timings: list[float] = []
    for clip in clips:
        start = time.perf_counter()
        scan = pipeline.scan_video(clip, model_dir / "face_landmarker.task")
        scan_s = time.perf_counter() - start
        print(f"{clip.name}: {scan.frame_count} frames, scanned in {scan_s:.1f} s; cuts at {sorted(scan.cuts)}")
        labels = scan.labels or tuple(range(len(scan.tracks)))
        offered = {t.index: p.number for p in scan.people for t in p.tracks}
        for t, label in zip(scan.tracks, labels, strict=True):
            who = f"face {offered[t.index]}" if t.index in offered else "not offered (too small)"
            print(f"  track {t.index}: frames {t.first}-{t.last} ({len(t.faces)} seen), face up to "
                  f"{t.best_size():.0f} px, group {label} → {who}")
        for p in scan.people:
            spans = ", ".join(f"{t.first}-{t.last}" for t in p.tracks)
            print(f"  face {p.number}: {len(p.tracks)} shot(s) [{spans}], {len(p.faces)} frames")
        embedded = [t for t in scan.tracks if t.embeddings is not None]
        for a in embedded if len(embedded) > 1 else []:
            near = [f"t{b.index} {distances(a.embeddings, b.embeddings).mean():.2f}" for b in embedded if b is not a]
            print(f"  track {a.index} mean distance to: {', '.join(near)}")
        # Time the embedder alone on the same faces the scan embedded (one face per call, as the worst case).
        wanted = {i: t for t in embedded for i in embedding_frames(t)}
        for i, frame in enumerate(video.read_frames(clip)):
            if i in wanted:
                start = time.perf_counter()
                embedder.embed(frame, [wanted[i].faces[i].box])
                timings.append(time.perf_counter() - start)
    if timings:
        ms = np.asarray(timings) * 1000
        print(f"embedding: {len(ms)} faces, {np.median(ms):.0f} ms median per face "
              f"(p90 {np.percentile(ms, 90):.0f} ms) on {os.cpu_count()} CPU core(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
