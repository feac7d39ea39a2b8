"""Convert a clip again with a bank `famswap swap` already trained, under other conversion options: an A/B of the
conversion alone (masks, mouth, sharpening), the training held fixed.

    FAMSWAP_HOME=H FAMSWAP_KEY_FILE=K .venv/bin/python benchmarks/reconvert.py CLIP --identity-from ENROLL... \\
        --out OUT.mp4 [--keep-mouth] [--no-hair] [--no-pose-fade] [--sharpen 1.0]

H and K are the data home and key of the earlier `famswap swap` (benchmarks/quality_swap.sh keeps them as
$OUT/home-M and $OUT/home-M/key). The person's decoder is found by the same key the CLI gives it (a hash of the
enrolled files), the face set and the scan are made again (a few seconds), the clip's main face is swapped.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.config import Settings  # noqa: E402
from famswap.local import _hair_model, _landmarker, _load_local_bank  # noqa: E402
from swap_engine import pipeline  # noqa: E402
from swap_engine.convert import ConvertOptions, convert_clip  # noqa: E402
from swap_engine.faceset import build_faceset  # noqa: E402
from swap_engine.model import load_bank  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--identity-from", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="lite")
    parser.add_argument("--keep-mouth", action="store_true")
    parser.add_argument("--no-hair", action="store_true", help="landmark hull only, no hair segmenter")
    parser.add_argument("--no-pose-fade", action="store_true")
    parser.add_argument("--sharpen", type=float, default=1.0)
    parser.add_argument("--color", default="reinhard", choices=("reinhard", "histogram", "none"))
    parser.add_argument("--crop-px", type=int, default=None)
    parser.add_argument("--detail", type=float, default=0.0)
    parser.add_argument("--detail-sigma", type=float, default=1.0)
    args = parser.parse_args(argv)
    settings = Settings.load()
    files = sorted(args.identity_from)
    person = "p" + hashlib.sha256("".join(pipeline.file_digest(f) for f in files).encode()).hexdigest()[:12]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _load_local_bank(settings, args.model, work / "bank.pt")
        bank, _ = load_bank(work / "bank.pt")
        if person not in bank.identities:
            print(f"no decoder {person} in the bank (it has {bank.identities})", file=sys.stderr)
            return 1
        build_faceset(files, work / "person", _landmarker(settings), hair_model=_hair_model(settings))
        scan = pipeline.scan_video(args.clip, _landmarker(settings))
        opts = ConvertOptions(
            identity=person,
            device="cpu",
            max_bytes=None,
            sharpen=args.sharpen,
            color=args.color,
            crop_px=args.crop_px,
            detail=args.detail,
            detail_sigma=args.detail_sigma,
            keep_mouth=args.keep_mouth,
            hair_model=None if args.no_hair else _hair_model(settings),
            pose_range=None if args.no_pose_fade else pipeline.pose_range(work / "person"),
        )
        report = convert_clip(args.clip, bank, scan, args.out, opts)
    print(f"{args.out}: {report.swapped} of {report.frames} frames swapped, {report.faded} faded; {report.notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
