"""The command line's own flows: swap a clip start to finish, list tracks; enroll, list and forget via storage."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.config import Settings
from common.errors import NoFaceFound, NotFound, UnsupportedMedia
from famswap.progress import StageBar, format_duration

log = logging.getLogger("famswap")

# The command line acts as one local user in one local "guild"; Discord ids are never 0.
LOCAL_GUILD = 0
LOCAL_USER = 0


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _check_input(path: Path) -> None:
    if not path.exists():
        raise UnsupportedMedia(f"{path} does not exist.", hint="Check the path.")


def _landmarker(settings: Settings) -> Path:
    from swap_engine.assets import landmarker_path

    return landmarker_path(settings.models_path)


def _hair_model(settings: Settings) -> Path:
    from swap_engine.assets import hair_segmenter_path

    return hair_segmenter_path(settings.models_path)


@contextmanager
def _work_folder(settings: Settings) -> Iterator[Path]:
    """A private folder for one command's intermediate files (faces, scans, checkpoints), always removed after:
    only the encrypted bank outlives the command, so a copied data home reveals no face."""
    folder = settings.jobs_dir / f"cli-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, mode=0o700)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _bank_file(settings: Settings, model: str) -> Path:
    return settings.home / "local" / f"bank-{model}.enc"


def _load_local_bank(settings: Settings, model: str, dst: Path) -> None:
    """Decrypt the command line's face bank (decoders of the people and actors it trained) to ``dst`` if any."""
    from storage.crypto import decrypt_stream, load_or_create_key

    src = _bank_file(settings, model)
    if src.is_file():
        keys = load_or_create_key(settings.key_path)
        with src.open("rb") as f, dst.open("wb") as out:
            for chunk in decrypt_stream(keys, f, src.name):
                out.write(chunk)


def _save_local_bank(settings: Settings, model: str, src: Path) -> None:
    from storage.crypto import encrypt_stream, load_or_create_key

    dst = _bank_file(settings, model)
    dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = load_or_create_key(settings.key_path)
    tmp = dst.with_name(dst.name + ".tmp")
    with src.open("rb") as f, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        encrypt_stream(keys, f, out)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(dst)


def _faceset_from_paths(settings: Settings, paths: list[Path], work: Path) -> tuple[str, Path]:
    """Build the face set of the person shown in ``paths``; returns (identity key, face-set folder).

    The key is a hash of the inputs' bytes, so the same photos train the same decoder again on the next run."""
    import hashlib

    from swap_engine.faceset import build_faceset
    from swap_engine.media import sniff_kind
    from swap_engine.pipeline import file_digest
    from worker.context import check_video

    for p in paths:
        _check_input(p)
    files = sorted(f for p in paths for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())))
    for f in files:
        if sniff_kind(f) == "video":
            check_video(f, settings)  # every cap before decoding: a 4096x4096 selfie video is refused in seconds
    key = hashlib.sha256("".join(file_digest(f) for f in files).encode()).hexdigest()[:12]
    folder = work / "person"
    with StageBar("enroll") as bar:
        report = build_faceset(
            paths,
            folder,
            _landmarker(settings),
            max_image_pixels=settings.max_image_pixels,
            hair_model=_hair_model(settings),
            on_progress=lambda fraction, message: bar.update(round(fraction * 100), 100, message),
        )
    _say(report.summary())
    return f"p{key}", folder


def swap(settings: Settings, args: argparse.Namespace) -> int:
    """`famswap swap`: enroll → scan the clip → extract the actor → train → convert, with a bar per stage."""
    from swap_engine import pipeline

    started = time.monotonic()
    clip: Path = args.clip
    _check_input(clip)
    from swap_engine.video import probe

    # The frame rate and frame count are capped as for the bot (the frames are what costs time), not the length.
    info = probe(clip, max_fps=settings.max_clip_fps, max_frames=settings.max_clip_frames)
    device = pipeline.resolve_device(args.device or settings.device)
    model = args.model or (settings.model if settings.model != "auto" else pipeline.default_model(device))
    minutes = args.train_minutes if args.train_minutes is not None else settings.train_seconds(device) / 60.0
    pipeline.configure_torch(settings.torch_thread_count())
    steps = getattr(args, "train_steps", None)
    budget = f"{steps} steps" if steps else f"{minutes:g} min"
    _say(f"famswap     {clip.name}: {info.width}x{info.height}, {info.duration:.1f} s; model {model} on {device}, "
         f"training {budget}")
    with _work_folder(settings) as work:
        return _swap_in(settings, args, clip, work, device, model, minutes, started)


def _swap_in(settings: Settings, args: argparse.Namespace, clip: Path, work: Path, device: str, model: str,
             minutes: float, started: float) -> int:
    from swap_engine import pipeline
    from swap_engine.convert import ConvertOptions, convert_clip
    from swap_engine.model import load_bank

    if args.identity_from:
        person, person_faces = _faceset_from_paths(settings, list(args.identity_from), work)
    else:
        person, person_faces = _stored_faceset(settings, args.identity, work)

    clip_key = pipeline.file_digest(clip)
    landmarker = _landmarker(settings)
    with StageBar("scan") as bar:
        scan = pipeline.scan_video(clip, landmarker, max_frames=settings.max_clip_frames,
                                   on_progress=lambda d, t, m: bar.update(d, t))
    _say(f"scan        {len(scan.tracks)} face track(s) in {scan.frame_count} frames")
    track = args.track if args.track is not None else 0
    chosen = scan.track(track)
    if len(scan.tracks) > 1 and args.track is None:
        _say(f"scan        swapping track 0, the main face; `famswap tracks {clip}` shows the others")

    actor_path = work / f"actor-t{track}.npz"
    with StageBar("actor") as bar:
        bar.update(0, 1)
        pipeline.extract_actor(clip, scan, track, actor_path, hair_model=_hair_model(settings))
    actor = f"a{clip_key[:12]}t{track}"
    _say(f"actor       {len(pipeline.choose_actor_frames(chosen))} faces of the actor to learn from")

    bank_path = work / "bank.pt"
    _load_local_bank(settings, model, bank_path)
    plan = pipeline.TrainPlan(
        faces={person: person_faces, actor: actor_path},
        bank_path=bank_path,
        checkpoint=work / "train.ckpt",
        model=model,
        device=device,
        seconds=minutes * 60.0,
        seed=args.seed or 0,
        hair_model=_hair_model(settings),
        steps=getattr(args, "train_steps", None),
    )
    budget = minutes * 60.0
    with StageBar("train") as bar:

        def on_train(p: object) -> None:
            loss = p.losses.get("total")  # type: ignore[attr-defined]
            extra = f"step {p.step}" + (f" loss {loss:.3f}" if loss is not None else "")  # type: ignore[attr-defined]
            extra += f" {p.samples_per_s:.0f} faces/s"  # type: ignore[attr-defined]
            if plan.steps:
                bar.update(min(p.step, plan.steps), plan.steps, extra)  # type: ignore[attr-defined]
            else:
                bar.update(min(p.elapsed_s, budget), budget, extra)  # type: ignore[attr-defined]

        result = pipeline.train_bank(plan, on_progress=on_train)
    _save_local_bank(settings, model, bank_path)
    _say(f"train       {result.step} steps, final loss {result.losses.get('total', float('nan')):.4f}")  # type: ignore[attr-defined]

    bank, _ = load_bank(bank_path)
    max_mb = args.max_mb if args.max_mb is not None else settings.output_max_mb
    opts = ConvertOptions(
        identity=person, track=track, device=device, max_bytes=int(max_mb * 1024 * 1024),
        hair_model=_hair_model(settings), pose_range=pipeline.pose_range(person_faces),
    )  # fmt: skip
    out: Path = args.out
    with StageBar("convert") as bar:
        report = convert_clip(
            clip, bank, scan, out, opts,
            on_progress=lambda d, t: bar.update(d, t),
            comparison_path=out.with_name(out.stem + ".compare.gif"),
        )  # fmt: skip
    out.with_name(out.stem + ".json").write_text(report.to_json(), encoding="utf-8")
    for note in report.notes:
        _say(f"note        {note}")
    _say(
        f"done        {out} ({report.bytes / 1e6:.1f} MB, {report.frames} frames, {report.swapped} swapped) "
        f"in {format_duration(time.monotonic() - started)}; before/after: {report.comparison}"
    )
    return 0


def tracks(settings: Settings, clip: Path, out: Path | None) -> int:
    """`famswap tracks`: list the clip's face tracks and write a numbered contact sheet."""
    from swap_engine import pipeline

    _check_input(clip)
    with StageBar("scan") as bar:
        scan = pipeline.scan_video(clip, _landmarker(settings), max_frames=settings.max_clip_frames,
                                   on_progress=lambda d, t, m: bar.update(d, t))
    sheet = pipeline.write_contact_sheet(clip, scan, out or clip.with_name(clip.stem + ".tracks.jpg"))
    for t in scan.tracks:
        print(f"track {t.index}: frames {t.first}-{t.last} ({len(t.faces)} seen), face about {t.faces[t.best_frame()].size:.0f} px")
    print(f"contact sheet: {sheet}")
    return 0


# -----------------------------------------------------------------------------
# stored identities (the same storage and worker the bot uses)


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _stored_faceset(settings: Settings, name: str, work: Path) -> tuple[str, Path]:
    """Decrypt a stored identity's face set into ``work``; returns (identity key, face-set folder)."""

    async def fetch() -> tuple[str, Path]:
        from storage import open_storage
        from swap_engine.faceset import unpack_faceset

        async with open_storage(settings) as store:
            identity = await store.find_identity(LOCAL_GUILD, LOCAL_USER, name)
            if identity.faceset is None:
                raise NoFaceFound(f"{identity.display_name} has no faces yet.", hint="Run `famswap enroll` first.")
            archive = await store.decrypt_to(identity.faceset, work / "faceset.tar")
            folder = unpack_faceset(archive, work / "person")
            archive.unlink()
            return f"i{identity.id}", folder

    return _run(fetch())  # type: ignore[return-value]


def enroll(settings: Settings, name: str, paths: list[Path]) -> int:
    """`famswap enroll`: store the inputs and build the face set through the worker; one line per input."""
    from worker.local import enroll_local

    outcome = _run(enroll_local(settings, LOCAL_GUILD, LOCAL_USER, name, paths))
    for line in outcome.lines:  # type: ignore[attr-defined]
        print(line)
    print(outcome.summary)  # type: ignore[attr-defined]
    return 0 if outcome.kept else 1  # type: ignore[attr-defined]


def list_identities(settings: Settings) -> int:
    async def go() -> int:
        from storage import open_storage

        async with open_storage(settings) as store:
            people = await store.list_identities(LOCAL_GUILD, LOCAL_USER)
            if not people:
                print("Nobody is enrolled yet: `famswap enroll NAME PHOTOS...`")
            for i in people:
                print(f"{i.display_name}: {i.face_count} faces, {i.status.value}")
        return 0

    return _run(go())  # type: ignore[return-value]


def forget(settings: Settings, name: str) -> int:
    """`famswap forget`: erase the identity in storage and its decoder from the command line's own bank."""

    async def go() -> int:
        from storage import open_storage

        async with open_storage(settings) as store:
            try:
                identity = await store.find_identity(LOCAL_GUILD, LOCAL_USER, name)
            except NotFound:
                print(f"Nobody called {name} is enrolled here.")
                return 1
            report = await store.forget_identity(LOCAL_GUILD, identity.id, LOCAL_USER)
        dropped = _drop_local_decoder(settings, f"i{identity.id}")
        print(
            f"Forgot {identity.display_name}: {report.uploads} upload(s), {report.results} result(s), "
            f"{report.files} stored file(s) erased" + (f"; decoder removed from {dropped} local bank(s)" if dropped else "")
        )
        return 0

    return _run(go())  # type: ignore[return-value]


def _drop_local_decoder(settings: Settings, identity: str) -> int:
    """Remove ``identity``'s decoder from every encrypted local bank that has one; returns how many changed."""
    from swap_engine.model import load_bank, save_bank

    changed = 0
    for bank_file in sorted((settings.home / "local").glob("bank-*.enc")):
        model = bank_file.stem[len("bank-") :]
        with _work_folder(settings) as work:
            plain = work / "bank.pt"
            _load_local_bank(settings, model, plain)
            bank, extra = load_bank(plain)
            if identity in bank.identities:
                bank.remove_identity(identity)
                save_bank(plain, bank, extra)
                _save_local_bank(settings, model, plain)
                changed += 1
    return changed
