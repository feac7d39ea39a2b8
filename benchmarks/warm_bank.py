"""Cold bank vs warm bank: how good is a swap after N training steps when the guild's bank was (or was not) warmed
on the family first? Prints one table of the independent judge's figures (../shared/tools/judge.py, dlib).

    nice .venv/bin/python benchmarks/warm_bank.py --warm-steps 2000 --cold 850 --warm 850

The family is the three people of ../shared/media/clips: ``selfie_woman_short.mp4`` (W), ``selfie_man.mp4`` (M) and
``selfie_woman_expressive.mp4`` (a third person). The pairs are issue 12's: **W→M** (W enrolled, put onto
``selfie_man.mp4``) and **M→S** (M enrolled, put onto ``scene_woman_room_720p.mp4``, an actor the bank never saw).
In W→M the actor is a family member, enrolled from the very clip the swap converts: the best case for a warm bank.

- face sets are built as the worker's ``prepare`` job builds them (hair-aware masks), the clip's scan and the actor's
  faces as its ``swap`` job does, once each, cached in ``--out``;
- the warm bank is what a ``warm`` job trains (``worker/warm.py``): the shared encoder and the three decoders together,
  constant learning rate, ``--warm-steps`` steps (resumed from its checkpoint when the script runs again);
- each swap trains exactly as the ``swap`` job does (``pipeline.train_bank``: the person's decoder and the actor's,
  which starts as a copy of the decoder that reconstructs the actor's faces best), for a step count (load-proof on a
  shared CPU; the table converts steps to minutes with the rate measured in the same run), from a fresh bank (cold)
  or from a copy of the warm bank (warm); then converted with the swap job's options and judged.

Environment: ``JUDGE_PY`` (default /tmp/judge/bin/python), ``FAMSWAP_MODEL_DIR`` (default ../shared/models).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swap_engine import pipeline  # noqa: E402

SHARED = Path(os.environ.get("FAMSWAP_SHARED_DIR", REPO.parent / "shared"))
CLIPS = SHARED / "media" / "clips"
MODELS = Path(os.environ.get("FAMSWAP_MODEL_DIR", SHARED / "models"))
JUDGE = SHARED / "tools" / "judge.py"
FAMILY = {"W": "selfie_woman_short.mp4", "M": "selfie_man.mp4", "E": "selfie_woman_expressive.mp4"}
JUDGED = ("id_retrieval", "gallery_top1", "id_dist", "src_dist", "pose_err", "expr_err", "flicker", "sharpness",
          "det_delta")


@dataclass(frozen=True)
class Pair:
    name: str
    person: str  # FAMILY key
    clip: str  # the actor's clip in CLIPS


PAIRS = (Pair("W→M", "W", "selfie_man.mp4"), Pair("M→S", "M", "scene_woman_room_720p.mp4"))


def face_sets(out: Path) -> dict[str, Path]:
    """Each family member's face set, built once like the worker's prepare job builds it."""
    from swap_engine.faceset import build_faceset

    folders = {}
    for key, clip in FAMILY.items():
        folder = out / f"faceset-{key}"
        if not (folder / "faceset.json").is_file():
            t0 = time.perf_counter()
            build_faceset([CLIPS / clip], folder, MODELS / "face_landmarker.task",
                          hair_model=MODELS / "hair_segmenter.tflite", max_video_seconds=60)
            print(f"face set {key} ({clip}) built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        folders[key] = folder
    return folders


def actor(out: Path, clip: str) -> tuple[Path, Path]:
    """The clip's scan and its main face's actor file, made once like the swap job makes them."""
    stem = Path(clip).stem
    scan_path, actor_path = out / f"scan-{stem}.npz", out / f"actor-{stem}.npz"
    if not scan_path.is_file():
        pipeline.save_scan(pipeline.scan_video(CLIPS / clip, MODELS / "face_landmarker.task"), scan_path)
    if not actor_path.is_file():
        pipeline.extract_actor(CLIPS / clip, pipeline.load_scan(scan_path), 0, actor_path,
                               hair_model=MODELS / "hair_segmenter.tflite")
    return scan_path, actor_path


def train(faces: dict[str, Path], folder: Path, steps: int, *, warm: bool) -> tuple[int, float]:
    """Train ``steps`` steps in ``folder`` (bank.pt, train.ckpt; resumed when there); (steps, training seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    plan = pipeline.TrainPlan(faces=faces, bank_path=folder / "bank.pt", checkpoint=folder / "train.ckpt",
                              model="lite", device="cpu", seconds=0, steps=steps, constant_lr=warm,
                              hair_model=MODELS / "hair_segmenter.tflite")
    done = folder / "done.json"
    if done.is_file():
        record = json.loads(done.read_text())
        if record["steps"] == steps:
            return steps, float(record["seconds"])
    result = pipeline.train_bank(plan)
    # The trainer's own clock: training time summed over every resumed run of this folder.
    done.write_text(json.dumps({"steps": result.step, "seconds": result.elapsed_s}))
    return result.step, result.elapsed_s


def judge(pair: Pair, swapped: Path, out: Path) -> dict[str, float]:
    cached = swapped.with_suffix(".judge.json")
    if not cached.is_file():
        text = subprocess.run(
            [os.environ.get("JUDGE_PY", "/tmp/judge/bin/python"), str(JUDGE),  # as nice as this script
             "--enrolled", str(CLIPS / FAMILY[pair.person]), "--original", str(CLIPS / pair.clip),
             "--swapped", str(swapped), "--gallery", str(CLIPS), str(SHARED / "media" / "photos"), "--json"],
            check=True, capture_output=True, text=True).stdout
        cached.write_text(text)
    return dict(json.loads(cached.read_text()))


def swap(pair: Pair, sets: dict[str, Path], out: Path, steps: int, warm_bank: Path | None) -> dict[str, object]:
    """One swap of ``pair``: train ``steps`` from a copy of ``warm_bank`` (or a fresh bank), convert, judge."""
    from swap_engine.convert import ConvertOptions, convert_clip
    from swap_engine.model import load_bank

    scan_path, actor_path = actor(out, pair.clip)
    tag = f"{pair.person}-{Path(pair.clip).stem}-{'warm' if warm_bank else 'cold'}-{steps}"
    folder = out / tag
    if warm_bank is not None and not (folder / "bank.pt").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(warm_bank, folder / "bank.pt")
    done, seconds = train({pair.person: sets[pair.person], "actor": actor_path}, folder, steps, warm=False)
    video = out / f"swap-{tag}.mp4"
    if not video.is_file():
        bank, _ = load_bank(folder / "bank.pt")
        opts = ConvertOptions(identity=pair.person, track=0, device="cpu", max_bytes=10 * 1024 * 1024,
                              hair_model=MODELS / "hair_segmenter.tflite",
                              pose_range=pipeline.pose_range(sets[pair.person]))
        convert_clip(CLIPS / pair.clip, bank, pipeline.load_scan(scan_path), video, opts)
    return {"pair": pair.name, "bank": "warm" if warm_bank else "cold", "steps": done, "seconds": seconds,
            **judge(pair, video, out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/famswap-warm"))
    parser.add_argument("--warm-steps", type=int, default=2000, help="steps of warming on the three people")
    parser.add_argument("--cold", type=int, nargs="*", default=[850], help="swap steps from a fresh bank")
    parser.add_argument("--warm", type=int, nargs="*", default=[850], help="swap steps from the warm bank")
    parser.add_argument("--pairs", nargs="*", default=[p.name for p in PAIRS])
    parser.add_argument("--only-warm", action="store_true", help="build the face sets and the warm bank, then stop")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # what FAMSWAP_TORCH_THREADS=auto gives on this 2-core host
    args.out.mkdir(parents=True, exist_ok=True)
    sets = face_sets(args.out)
    warm_steps, warm_seconds = 0, 0.0
    if args.warm or args.only_warm:  # (cold rows alone can run beside the warming, in another process)
        warm_steps, warm_seconds = train(sets, args.out / "warm", args.warm_steps, warm=True)
        print(f"warm bank: {warm_steps} steps on {len(sets)} people in {warm_seconds / 60:.1f} min "
              f"({warm_steps / max(warm_seconds, 1e-9) * 60:.0f} steps/min)", file=sys.stderr)
    if args.only_warm:
        return 0
    rows = []
    for pair in (p for p in PAIRS if p.name in args.pairs):
        for steps in args.cold:
            rows.append(swap(pair, sets, args.out, steps, None))
            print(json.dumps(rows[-1]), file=sys.stderr)
        for steps in args.warm:
            rows.append(swap(pair, sets, args.out, steps, args.out / "warm" / "bank.pt"))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"warm bank: {warm_steps} steps on W, M and E ({warm_seconds / 60:.1f} min here)\n")
    print("| pair | bank | swap steps | swap train min (here) | " + " | ".join(JUDGED) + " |")
    print("| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in JUDGED) + " |")
    for r in rows:
        cells = [r["pair"], r["bank"], str(r["steps"]), f"{float(r['seconds']) / 60:.1f}"]  # type: ignore[arg-type]
        print("| " + " | ".join(cells + [str(r[k]) for k in JUDGED]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
