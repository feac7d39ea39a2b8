"""What the one-person check costs an enrollment: the embedding's cost per face, and ``build_faceset`` on each selfie
video with and without it (as the worker builds it, hair masks included), interleaved so that both see the same
load.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_one_person.py            # about 4 min on 2 busy cores
    PYTHONPATH=. .venv/bin/python benchmarks/bench_one_person.py --clips selfie_man.mp4 --repeats 1

The numbers are wall clock on whatever else the machine is doing: run it twice on a shared box.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from swap_engine.embed import FaceEmbedder
from swap_engine.faceset import build_faceset, load_faceset
from swap_engine.one_person import crop_embeddings

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", type=Path, default=SHARED / "media" / "clips")
    parser.add_argument("--model-dir", type=Path, default=SHARED / "models")
    parser.add_argument("--clips", nargs="+", default=["selfie_man.mp4", "selfie_woman_expressive.mp4"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    checks = _CheckLog()
    logging.getLogger("famswap.faceset").addHandler(checks)
    logging.getLogger("famswap.faceset").setLevel(logging.INFO)
    landmarker = args.model_dir / "face_landmarker.task"
    hair = args.model_dir / "hair_segmenter.tflite"
    started = time.perf_counter()
    embedder = FaceEmbedder()
    print(f"FaceEmbedder() loads in {time.perf_counter() - started:.2f} s")
    work = Path(tempfile.mkdtemp(prefix="bench-one-person."))
    for name in args.clips:
        clip = args.media / name
        times: dict[str, list[float]] = {"without": [], "with": []}
        faces = 0
        for n in range(args.repeats):
            for mode in ("without", "with"):
                started = time.perf_counter()
                report = build_faceset([clip], work / f"{clip.stem}-{mode}-{n}", landmarker, hair_model=hair,
                                       embedder=embedder if mode == "with" else None)
                times[mode].append(time.perf_counter() - started)
                faces = len(report.kept)
        # The cost per face, on this clip's own kept crops.
        fs = load_faceset(work / f"{clip.stem}-with-0")
        sample = min(len(fs), 24)
        started = time.perf_counter()
        crop_embeddings(list(fs.crops[:sample]), list(fs.points[:sample]), embedder)
        per_face = (time.perf_counter() - started) / max(sample, 1)
        rejected = [r for r in report.rejected if r.reason == "someone else"]
        before, after = statistics.median(times["without"]), statistics.median(times["with"])
        print(f"{name}: {faces} faces kept; build_faceset {before:.1f} s without the check, {after:.1f} s with it "
              f"(median of {args.repeats}); the check itself: {checks.last} ({statistics.median(checks.seconds):.2f} s "
              f"median); embedding {per_face * 1000:.0f} ms per face; {len(rejected)} rejected as someone else")
        checks.seconds.clear()


class _CheckLog(logging.Handler):
    """Keeps faceset's "one-person check: N of M faces embedded in S s" lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("one-person check: "):
            self.last = text.removeprefix("one-person check: ")
            self.seconds.append(float(text.split(" in ")[1].split(" s")[0]))


if __name__ == "__main__":
    main()
