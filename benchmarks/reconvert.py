"""Convert a clip again with the face bank an earlier `famswap swap` trained, under other conversion options: an A/B
of the conversion alone (masks, colour, mouth, detail), the training held fixed.

    FAMSWAP_HOME=H FAMSWAP_KEY_FILE=K .venv/bin/python benchmarks/reconvert.py CLIP --identity NAME --out OUT.mp4 \\
        [--keep-mouth] [--no-hair] [--no-pose-fade] [--learned-mask] [--sharpen 1.0] [--color reinhard] \\
        [--crop-px 256 --detail 0.8 --detail-sigma 0.75] [--person-detail 1.0 --person-detail-px 32]

H and K are the data home and key of the earlier `famswap swap` (benchmarks/quality_swap.sh keeps them as
$OUT/home-M and $OUT/home-M/key). NAME is the person as `famswap identities` lists them (`--identity-from` enrolls
them as ``from-…``; with one person enrolled, NAME may be left out). The person's decoder and face set come from the
local guild's storage; the clip is scanned again and its main face swapped. The actor's own decoder is not needed:
conversion encodes the actor's face and decodes it as the person.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.config import Settings  # noqa: E402
from storage import open_storage  # noqa: E402
from storage.api import LOCAL_GUILD, LOCAL_USER  # noqa: E402
from swap_engine import pipeline  # noqa: E402
from swap_engine.assets import hair_segmenter_path, landmarker_path  # noqa: E402
from swap_engine.convert import ConvertOptions, convert_clip  # noqa: E402
from swap_engine.faceset import unpack_faceset  # noqa: E402
from swap_engine.model import FaceBank, bank_from_parts  # noqa: E402
from worker.bank import decrypt_bank  # noqa: E402


async def fetch(settings: Settings, name: str | None, work: Path) -> tuple[FaceBank, str, Path]:
    """The local guild's bank, the person's decoder id in it, and their face-set folder."""
    async with open_storage(settings) as store:
        people = await store.list_identities(LOCAL_GUILD, LOCAL_USER)
        if name is None:
            if len(people) != 1:
                raise SystemExit(f"say --identity: enrolled are {[p.display_name for p in people]}")
            person = people[0]
        else:
            person = await store.find_identity(LOCAL_GUILD, LOCAL_USER, name)
        bank_row = await store.get_bank(LOCAL_GUILD)
        if bank_row is None or bank_row.encoder is None or person.faceset is None:
            raise SystemExit(f"{settings.home} holds no trained bank or no face set for {person.display_name}")
        encoder, decoders = await decrypt_bank(store, bank_row, work)
        archive = await store.decrypt_to(person.faceset, work / "faceset.tar")
        return bank_from_parts(encoder, decoders), person.engine_id, unpack_faceset(archive, work / "person")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--identity", default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep-mouth", action="store_true")
    parser.add_argument("--no-hair", action="store_true", help="landmark hull only, no hair segmenter")
    parser.add_argument("--no-pose-fade", action="store_true")
    parser.add_argument("--learned-mask", action="store_true",
                        help="also cut the paste by the decoder's learned mask (off by default)")
    parser.add_argument("--sharpen", type=float, default=1.0)
    parser.add_argument("--color", default="reinhard", choices=("reinhard", "histogram", "none"))
    parser.add_argument("--crop-px", type=int, default=None)
    parser.add_argument("--detail", type=float, default=0.0)
    parser.add_argument("--detail-sigma", type=float, default=1.0,
                        help="model px; 0: the band above the model's resolution")
    parser.add_argument("--detail-keeps", default="skin", choices=("skin", "no-eyes", "face"),
                        help="features that stay the decoder's under the detail")
    parser.add_argument("--person-detail", type=float, default=ConvertOptions.person_detail,
                        help="the person's own detail from their face set (0 = off; default: as shipped)")
    parser.add_argument("--person-detail-px", type=int, default=None,
                        help="detail finer than a face this wide is the person's (default: half the decoder's side)")
    parser.add_argument("--person-eye-px", type=int, default=None,
                        help="over the eyes, detail finer than a face this wide is the person's (default: an eighth"
                             " of the decoder's side)")
    parser.add_argument("--no-person-mouth", action="store_true",
                        help="over the mouth only the fine band, as over the rest of the face (before round 7)")
    args = parser.parse_args(argv)
    settings = Settings.load()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bank, person, faces = asyncio.run(fetch(settings, args.identity, work))
        landmarker = landmarker_path(settings.models_path)
        scan = pipeline.scan_video(args.clip, landmarker)
        hair = hair_segmenter_path(settings.models_path)
        opts = ConvertOptions(
            identity=person,
            device="cpu",
            max_bytes=None,
            sharpen=args.sharpen,
            color=args.color,
            crop_px=args.crop_px,
            detail=args.detail,
            detail_sigma=args.detail_sigma,
            detail_keeps=args.detail_keeps,
            person_detail=args.person_detail,
            person_detail_px=args.person_detail_px,
            person_eye_px=args.person_eye_px,
            person_mouth=not args.no_person_mouth,
            faceset=faces,
            keep_mouth=args.keep_mouth,
            learned_mask=args.learned_mask,
            hair_model=None if args.no_hair else hair,
            pose_range=None if args.no_pose_fade else pipeline.pose_range(faces),
        )
        report = convert_clip(args.clip, bank, scan, args.out, opts)
    print(f"{args.out}: {report.swapped} of {report.frames} frames swapped, {report.faded} faded; {report.notes}")
    per_frame = {k: round(1000 * v / max(1, report.frames), 1) for k, v in report.timings.items()}
    print(f"ms per frame: {per_frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
