"""Convert a clip again with a bank `famswap swap` already trained, under other conversion options: an A/B of the
conversion alone (masks, mouth, sharpening), the training held fixed.

    FAMSWAP_HOME=H FAMSWAP_KEY_FILE=K .venv/bin/python benchmarks/reconvert.py CLIP --identity-from ENROLL... \\
        --out OUT.mp4 [--keep-mouth] [--no-hair] [--no-pose-fade] [--sharpen 1.0]

H and K are the data home and key of the earlier `famswap swap` (benchmarks/quality_swap.sh keeps them as
$OUT/home-M and $OUT/home-M/key). The person is the identity the CLI enrolled them as (``from-`` and a hash of the
enrolled files), their decoder and the encoder come from storage's bank of the local guild; the face set and the scan
are made again (a few seconds), the clip's main face is swapped.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.config import Settings  # noqa: E402
from storage import LOCAL_GUILD, LOCAL_USER, open_storage  # noqa: E402
from swap_engine import pipeline  # noqa: E402
from swap_engine.assets import hair_segmenter_path, landmarker_path  # noqa: E402
from swap_engine.convert import ConvertOptions, convert_clip  # noqa: E402
from swap_engine.faceset import build_faceset  # noqa: E402
from swap_engine.model import FaceBank, bank_from_parts  # noqa: E402
from worker.bank import decrypt_bank  # noqa: E402


async def _local_bank(settings: Settings, name: str, work: Path) -> tuple[FaceBank, str]:
    """The local guild's bank and the engine key of the identity ``name``."""
    async with open_storage(settings) as store:
        identity = await store.find_identity(LOCAL_GUILD, LOCAL_USER, name)
        bank = await store.get_bank(LOCAL_GUILD)
        if bank is None or bank.encoder is None:
            raise SystemExit("the data home has no trained bank")
        encoder, decoders = await decrypt_bank(store, bank, work)
    return bank_from_parts(encoder, decoders), identity.engine_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--identity-from", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep-mouth", action="store_true")
    parser.add_argument("--no-hair", action="store_true", help="landmark hull only, no hair segmenter")
    parser.add_argument("--no-pose-fade", action="store_true")
    parser.add_argument("--sharpen", type=float, default=1.0)
    parser.add_argument("--no-learned-mask", action="store_true",
                        help="ignore the decoder's learned mask (blend over the actor's face mask alone)")
    parser.add_argument("--color", default="reinhard", choices=("reinhard", "histogram", "none"))
    parser.add_argument("--crop-px", type=int, default=None)
    parser.add_argument("--detail", type=float, default=0.0)
    parser.add_argument("--detail-sigma", type=float, default=1.0)
    args = parser.parse_args(argv)
    settings = Settings.load()
    if args.no_learned_mask:
        import swap_engine.train as train

        plain = train.swap_faces
        train.swap_faces = lambda *a, **k: (plain(*a, **k)[0], None)  # type: ignore[assignment]
    files = sorted(args.identity_from)
    name = "from-" + hashlib.sha256("".join(pipeline.file_digest(f) for f in files).encode()).hexdigest()[:12]
    landmarker, hair = landmarker_path(settings.models_path), hair_segmenter_path(settings.models_path)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bank, person = asyncio.run(_local_bank(settings, name, work))
        if person not in bank.identities:
            print(f"no decoder for {name} in the bank (it has {bank.identities})", file=sys.stderr)
            return 1
        build_faceset(files, work / "person", landmarker, hair_model=hair)
        scan = pipeline.scan_video(args.clip, landmarker)
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
            hair_model=None if args.no_hair else hair,
            pose_range=None if args.no_pose_fade else pipeline.pose_range(work / "person"),
        )
        report = convert_clip(args.clip, bank, scan, args.out, opts)
    print(f"{args.out}: {report.swapped} of {report.frames} frames swapped, {report.faded} faded; {report.notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
