"""The worker: claims jobs from storage and runs the engine's stages on one device; resumable and cancellable.

The only engine module that imports `storage`. One worker process per GPU (or one on the CPU). Job kinds:

- ``prepare``: build an identity's face set from its uploads (per-upload verdicts, a summary, a thumbnail grid).
- ``train``: fine-tune the guild's bank for the job's identities.
- ``swap``: scan the clip → (ask which face, when several compete) → extract the actor → train → convert.

Engine work runs in a thread; the event loop keeps the lease alive (heartbeats every few seconds), notices a
cancel within one heartbeat, and writes progress and previews to storage at a bounded rate. A swap saves a resume
point after each stage and while training (the scan and the trainer's checkpoint, encrypted in storage), so a job
re-claimed after a crash continues where it stopped. SIGTERM checkpoints the running job and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from famswap.config import Settings
from famswap.errors import FamswapError, JobCancelled, MediaError, NoFaceFound, TrainingError
from storage import (
    BankConflict,
    Identity,
    IdentityStatus,
    Job,
    JobKind,
    LeaseLost,
    Storage,
    Upload,
    UploadKind,
    UploadStatus,
    open_storage,
)
from swap_engine import pipeline

log = logging.getLogger("famswap.worker")

HEARTBEAT_S = 2.0
LEASE_S = 60.0
RETENTION_EVERY_S = 3600.0  # expire results / erase servers past their grace period this often
# Several faces compete when the second track has at least this share of the main one's screen time × size.
COMPETING_TRACK_SHARE = 0.5


class _Interrupted(Exception):
    """The worker is shutting down (SIGTERM): the job was checkpointed and goes back to the queue."""


@dataclass
class JobContext:
    """What a stage needs while it runs in the worker's thread: the job, its folder, and ways to talk to storage."""

    store: Storage
    job: Job
    worker_id: str
    folder: Path
    loop: asyncio.AbstractEventLoop
    device: str
    settings: Settings
    cancelled: threading.Event = field(default_factory=threading.Event)
    shutting_down: threading.Event = field(default_factory=threading.Event)

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a storage coroutine on the worker's event loop from the engine thread and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def should_stop(self) -> bool:
        return self.cancelled.is_set() or self.shutting_down.is_set()

    def check(self) -> None:
        """Raise at a safe point if the job was cancelled or the worker is stopping."""
        if self.cancelled.is_set():
            raise JobCancelled("The job was cancelled.")
        if self.shutting_down.is_set():
            raise _Interrupted()

    def progress(self, stage: str, percent: float | None, message: str, preview: bytes | None = None) -> None:
        self.check()
        self.call(
            self.store.report_progress(
                self.job.id, self.worker_id, stage=stage, percent=percent, message=message, preview=preview
            )
        )

    def save_state(self, state: dict[str, Any], checkpoint: Path | None = None) -> None:
        self.call(self.store.save_checkpoint(self.job.id, self.worker_id, state, checkpoint=checkpoint))

    def model_name(self) -> str:
        """The model to train: the job's choice, else the setting, else the device's default."""
        s = self.settings
        chosen = self.job.payload.get("model") or (s.model if s.model != "auto" else None)
        return str(chosen or pipeline.default_model(self.device))


@dataclass
class Outcome:
    """What a finished job hands to storage."""

    video: Path | None = None
    comparison: Path | bytes | None = None
    report: dict[str, Any] = field(default_factory=dict)
    expires_in: float | None = None  # seconds the result is kept, when less than FAMSWAP_RESULT_DAYS


# -----------------------------------------------------------------------------
# face-set archives and bank parts (storage keeps files; the engine wants folders and a FaceBank)


def pack_faceset(folder: Path, archive: Path) -> Path:
    """An uncompressed tar of a face-set folder (the crops are PNGs already)."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(folder)))
    return archive


def unpack_faceset(archive: Path, folder: Path) -> Path:
    """Unpack a face-set tar made by ``pack_faceset``, refusing any member that would land outside ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    with tarfile.open(archive, "r") as tar:
        for member in tar.getmembers():
            target = (folder / member.name).resolve()
            if not member.isfile() or root not in target.parents:
                raise ValueError(f"unexpected entry {member.name!r} in a face-set archive")
            source = tar.extractfile(member)
            assert source is not None
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
    return folder


def merge_facesets(new: Path, earlier: Path) -> int:
    """Append the faces of an earlier face set (same crop size and coverage) to ``new``; returns the total."""
    from swap_engine.faceset import FACESET_JSON

    doc = json.loads((new / FACESET_JSON).read_text(encoding="utf-8"))
    old = json.loads((earlier / FACESET_JSON).read_text(encoding="utf-8"))
    if (old.get("size"), old.get("coverage")) != (doc.get("size"), doc.get("coverage")):
        log.warning("an earlier face set has another crop size or coverage; starting afresh")
        return len(doc["faces"])
    from swap_engine.faceset import mask_file

    faces = doc["faces"]
    for record in old["faces"]:
        name = f"faces/{len(faces):04d}.png"
        shutil.copyfile(earlier / record["file"], new / name)
        mask = record.get("mask")  # version-1 sets have none: load_faceset makes it
        if mask:
            shutil.copyfile(earlier / mask, new / mask_file(name))
        faces.append({**record, "file": name, "mask": mask_file(name) if mask else None})
    (new / FACESET_JSON).write_text(json.dumps(doc), encoding="utf-8")
    return len(faces)


def _save_part(obj: dict[str, Any], path: Path) -> Path:
    import torch

    torch.save(obj, path)
    return path


def bank_from_storage(ctx: JobContext, model: str, folder: Path) -> tuple[object, int, dict[str, int]]:
    """The guild's bank as a FaceBank (encoder + the decoders storage has), its version, and decoder versions."""
    import torch

    from swap_engine.model import FaceBank, config_from_dict, model_config

    bank_row = ctx.call(ctx.store.get_bank(ctx.job.guild_id))
    if bank_row is None or bank_row.encoder is None:
        return FaceBank(model_config(model)), 0 if bank_row is None else bank_row.version, {}
    enc_path = ctx.call(ctx.store.decrypt_to(bank_row.encoder, folder / "encoder.pt"))
    enc = torch.load(enc_path, map_location="cpu", weights_only=True)
    bank = FaceBank(config_from_dict(enc["model_args"]))
    bank.encoder.load_state_dict(enc["state"])
    for identity_id, ref in bank_row.decoders.items():
        path = ctx.call(ctx.store.decrypt_to(ref, folder / f"decoder-{identity_id}.pt"))
        bank.add_identity(str(identity_id))
        bank.decoder(str(identity_id)).load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return bank, bank_row.version, dict(bank_row.decoder_versions)


def bank_to_storage(ctx: JobContext, bank: Any, base_version: int, identities: dict[int, int], folder: Path) -> None:
    """Save the encoder and the decoders of ``identities`` (id → face-set version) as the guild's new bank."""
    enc = _save_part({"model_args": asdict(bank.cfg), "state": bank.encoder.state_dict()}, folder / "encoder.out.pt")
    decoders = {
        i: _save_part(bank.decoder(str(i)).state_dict(), folder / f"decoder-{i}.out.pt") for i in identities
    }
    ctx.call(
        ctx.store.save_bank(
            ctx.job.guild_id,
            base_version=base_version,
            encoder=enc,
            decoders=decoders,
            decoder_versions=identities,
            config={"model_args": asdict(bank.cfg)},
        )
    )


# -----------------------------------------------------------------------------
# job: prepare (build an identity's face set)


def check_video(path: Path, settings: Settings) -> Any:
    """A user's video against every cap (length, pixels, frame rate, frames), before any frame is decoded; returns
    its ``VideoInfo``. ``MediaTooLarge`` / ``UnsupportedMedia`` with a message naming the file."""
    from swap_engine.video import probe

    return probe(path, max_seconds=settings.max_clip_seconds, max_pixels=settings.max_clip_pixels,
                 max_fps=settings.max_clip_fps, max_frames=settings.max_clip_frames)


def _thumbnail_grid(folder: Path, columns: int = 6, cell: int = 96, limit: int = 24) -> bytes:
    from swap_engine.faceset import load_faceset

    fs = load_faceset(folder)
    picks = np.linspace(0, len(fs) - 1, min(limit, len(fs))).round().astype(int)
    tiles = [cv2.resize(fs.crops[i], (cell, cell), interpolation=cv2.INTER_AREA) for i in picks]
    rows = (len(tiles) + columns - 1) // columns
    grid = np.full((rows * cell, min(columns, len(tiles)) * cell, 3), 20, np.uint8)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, columns)
        grid[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = tile
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return data.tobytes()


def _safe_suffix(filename: str) -> str:
    """The file's extension when it is a plain short one (".jpg", ".mp4"), else none: decoders sniff the content."""
    suffix = Path(filename).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ""


def _named(text: str, stored: str, shown: str) -> str:
    """A message about a file, naming it as the user sent it rather than as this job stored it."""
    return text.replace(stored, shown)


def run_prepare(ctx: JobContext) -> Outcome:
    """Decrypt the identity's uploads, build the face set, record each upload's verdict, store set + thumbnails."""
    from swap_engine.assets import hair_segmenter_path, landmarker_path
    from swap_engine.faceset import build_faceset

    (identity_id,) = ctx.job.identity_ids
    store, guild = ctx.store, ctx.job.guild_id
    identity: Identity = ctx.call(store.get_identity(guild, identity_id))
    usable = [u for u in ctx.call(store.list_uploads(guild, identity_id)) if u.status != UploadStatus.REJECTED]
    # Uploads already judged may have had their raw file deleted (retention): their faces live on in the current
    # face set, which is merged into the new one below.
    uploads = [u for u in usable if u.blob is not None]
    earlier = None
    if identity.faceset is not None and any(u.blob is None for u in usable):
        earlier = _identity_faces(ctx, identity)
    if not uploads:
        raise NoFaceFound(f"{identity.display_name} has no new photos or videos to learn from.",
                          hint="Send some with /enroll.")
    inputs_dir = ctx.folder / "inputs"
    inputs_dir.mkdir(exist_ok=True)
    # Each upload is decrypted under its id, never under the name the user gave it (names repeat, and can be
    # anything: too long for the file system, or a path); messages still name what the user sent.
    by_source: dict[str, Upload] = {}
    paths: list[Path] = []
    lines: list[str] = []
    refused: list[FamswapError] = []
    for u in uploads:
        path = ctx.call(store.decrypt_to(u.blob, inputs_dir / f"{u.id}{_safe_suffix(u.filename)}"))
        if u.kind is UploadKind.VIDEO:
            try:  # every cap before any frame is decoded: a 4096x4096 or 1000 fps video is refused in seconds
                check_video(path, ctx.settings)
            except MediaError as exc:
                reason = _named(exc.message, path.name, u.filename)
                refused.append(type(exc)(reason, hint=exc.hint))
                ctx.call(store.record_upload_outcome(u.id, UploadStatus.REJECTED, reason=refused[-1].user_text()))
                lines.append(f"{u.filename}: rejected — {refused[-1].user_text()}")
                path.unlink(missing_ok=True)
                continue
        paths.append(path)
        by_source[path.name] = u
    if not paths:
        keep = IdentityStatus.READY if identity.faceset is not None else IdentityStatus.EMPTY
        ctx.call(store.set_identity_status(guild, identity_id, keep))
        raise refused[0]
    ctx.progress("faces", 0, f"looking for {identity.display_name}'s face in {len(paths)} file(s)")
    out = ctx.folder / "faceset"
    s = ctx.settings
    try:
        report = build_faceset(
            paths,
            out,
            landmarker_path(s.models_path),
            max_image_pixels=s.max_image_pixels,
            hair_model=hair_segmenter_path(s.models_path),
            max_video_seconds=s.max_clip_seconds,
            max_video_pixels=s.max_clip_pixels,
            on_progress=lambda fraction, message: ctx.progress("faces", fraction * 100, message),
        )
    except NoFaceFound as exc:
        for u in by_source.values():
            if u.status == UploadStatus.PENDING:
                ctx.call(store.record_upload_outcome(u.id, UploadStatus.REJECTED, reason=exc.message))
        keep = IdentityStatus.READY if identity.faceset is not None else IdentityStatus.EMPTY
        ctx.call(store.set_identity_status(guild, identity_id, keep))
        raise
    for source, u in by_source.items():
        kept = sum(1 for r in report.kept if r.source == source)
        problems = [r for r in report.rejected if r.source == source and r.frame is None]
        if kept:
            ctx.call(store.record_upload_outcome(u.id, UploadStatus.ACCEPTED, faces_found=kept))
            lines.append(f"{u.filename}: {kept} face{'s' if kept != 1 else ''} kept")
        else:
            reason = _named(problems[0].detail, source, u.filename) if problems else "no usable face"
            ctx.call(store.record_upload_outcome(u.id, UploadStatus.REJECTED, reason=reason))
            lines.append(f"{u.filename}: rejected — {reason}")
    summary = report.summary()
    total = len(report.kept)
    if earlier is not None:
        total = merge_facesets(out, earlier)
        summary += f" ({total} faces in all with the ones enrolled before)"
    archive = pack_faceset(out, ctx.folder / "faceset.tar")
    thumb = _thumbnail_grid(out)
    ctx.call(
        store.set_faceset(
            guild, identity_id, archive, face_count=total,
            summary={"text": summary, "lines": lines}, thumbnail=thumb,
        )
    )  # fmt: skip
    return Outcome(comparison=thumb, report={"kind": "prepare", "identity": identity.display_name,
                                             "faces": total, "summary": summary, "lines": lines})


# -----------------------------------------------------------------------------
# synthetic artefacts: the visible label and the metadata each format can hold


def labelled_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """A synthetic still (RGB uint8) as JPEG bytes: the "AI face swap" badge drawn in, the synthetic-media XMP
    packet attached (OpenCV's encoder cannot write XMP; Pillow's can)."""
    import io

    from PIL import Image

    from swap_engine.label import SYNTHETIC_XMP, draw_label

    out = io.BytesIO()
    Image.fromarray(draw_label(image)).save(out, format="JPEG", quality=quality, xmp=SYNTHETIC_XMP.encode())
    return out.getvalue()


def mark_gif_synthetic(path: Path) -> Path:
    """Add the synthetic-media statement to a GIF as a comment extension, in place (ffmpeg's GIF muxer drops all
    metadata, and re-encoding with Pillow would re-quantize the frames). The frames are not touched."""
    from swap_engine.label import SYNTHETIC_METADATA

    data = path.read_bytes()
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        raise ValueError(f"{path.name} is not a GIF")
    packed = data[10]  # logical screen descriptor: a global colour table of 3 * 2^(n+1) bytes follows when set
    start = 13 + ((3 << ((packed & 7) + 1)) if packed & 0x80 else 0)
    text = f"{SYNTHETIC_METADATA['comment']} ({SYNTHETIC_METADATA['digital_source_type']})".encode()
    blocks = b"".join(bytes([len(text[i : i + 255])]) + text[i : i + 255] for i in range(0, len(text), 255))
    # Comments are a GIF89a feature; ffmpeg writes 89a already.
    path.write_bytes(b"GIF89a" + data[6:start] + b"\x21\xfe" + blocks + b"\x00" + data[start:])
    return path


# -----------------------------------------------------------------------------
# job: swap and train


def train_seconds(ctx: JobContext) -> float:
    """The training budget: the payload's override, else by device and quality (see ``Settings.train_seconds``)."""
    payload = ctx.job.payload
    if payload.get("train_seconds"):
        return float(payload["train_seconds"])
    return ctx.settings.train_seconds(ctx.device, payload.get("quality"))


def _identity_faces(ctx: JobContext, identity: Identity) -> Path:
    if identity.faceset is None:
        raise NoFaceFound(
            f"{identity.display_name} has no face set yet.", hint="Wait for /enroll to finish, or enroll again."
        )
    archive = ctx.call(ctx.store.decrypt_to(identity.faceset, ctx.folder / f"faceset-{identity.id}.tar"))
    folder = unpack_faceset(archive, ctx.folder / f"faceset-{identity.id}")
    archive.unlink()
    return folder


def _pack_state(ctx: JobContext, names: list[str]) -> Path:
    archive = ctx.folder / "resume.tar"
    with tarfile.open(archive, "w") as tar:
        for name in names:
            if (ctx.folder / name).is_file():
                tar.add(ctx.folder / name, arcname=name)
    return archive


def _restore_state(ctx: JobContext) -> dict[str, Any]:
    """Bring back the files of the last resume point (if any) and return the saved state."""
    job = ctx.job
    if job.checkpoint is not None:
        archive = ctx.call(ctx.store.decrypt_to(job.checkpoint, ctx.folder / "resume.tar"))
        with tarfile.open(archive, "r") as tar:
            for member in tar.getmembers():
                if member.isfile() and "/" not in member.name:
                    source = tar.extractfile(member)
                    assert source is not None
                    (ctx.folder / member.name).write_bytes(source.read())
        archive.unlink()
    return dict(job.state)


def _train(ctx: JobContext, faces: dict[str, Path], identities: dict[int, int], state: dict[str, Any],
           keep: list[str], stage_base: float, stage_span: float) -> Any:
    """Train the guild's bank on ``faces`` (identity key → faces) and save the stored identities' decoders."""
    from swap_engine.model import save_bank

    model = ctx.model_name()
    bank, version, _ = bank_from_storage(ctx, model, ctx.folder)
    bank_path = ctx.folder / "bank.pt"
    save_bank(bank_path, bank)  # type: ignore[arg-type]
    seconds = train_seconds(ctx)
    checkpoint = ctx.folder / "train.ckpt"
    last_saved = [checkpoint.stat().st_mtime if checkpoint.exists() else 0.0]

    def on_progress(p: Any) -> None:
        total = p.losses.get("total")
        message = f"training: step {p.step}" + (f", loss {total:.3f}" if total is not None else "")
        preview = None if p.preview is None else labelled_jpeg(p.preview)
        ctx.call(ctx.store.report_progress(
            ctx.job.id, ctx.worker_id, stage="train",
            percent=stage_base + stage_span * min(1.0, p.elapsed_s / max(seconds, 1e-6)), message=message,
            preview=preview,
        ))  # fmt: skip
        if checkpoint.exists() and checkpoint.stat().st_mtime > last_saved[0]:
            last_saved[0] = checkpoint.stat().st_mtime
            ctx.save_state({**state, "stage": "train", "train_step": p.step}, _pack_state(ctx, keep + ["train.ckpt"]))

    from swap_engine.assets import hair_segmenter_path

    plan = pipeline.TrainPlan(faces=faces, bank_path=bank_path, checkpoint=checkpoint, model=model,
                              device=ctx.device, seconds=seconds, seed=int(ctx.job.payload.get("seed", 0)),
                              hair_model=hair_segmenter_path(ctx.settings.models_path))
    result = _train_with_oom_fallback(plan, on_progress, ctx.should_stop)
    if result.stopped in ("cancelled", "signal"):
        if not ctx.cancelled.is_set():  # a cancelled job never resumes: don't spend seconds uploading its checkpoint
            ctx.save_state({**state, "stage": "train", "train_step": result.step},
                           _pack_state(ctx, keep + ["train.ckpt"]))
        ctx.check()
    from swap_engine.model import load_bank

    trained, _ = load_bank(bank_path)
    try:
        bank_to_storage(ctx, trained, version, identities, ctx.folder)
    except BankConflict:
        log.warning("job %d: another worker saved the bank meanwhile; keeping this job's result only", ctx.job.id)
    state.update({"stage": "trained", "train_step": result.step})
    ctx.save_state(state, _pack_state(ctx, keep + ["bank.pt"]))
    return result


def _train_with_oom_fallback(plan: pipeline.TrainPlan, on_progress: Callable[[Any], None],
                             should_stop: Callable[[], bool]) -> Any:
    try:
        return pipeline.train_bank(plan, on_progress=on_progress, should_stop=should_stop)
    except TrainingError:
        raise
    except RuntimeError as exc:  # a CUDA OOM the trainer could not absorb by halving its batch
        if "out of memory" not in str(exc).lower():
            raise
        raise TrainingError(
            "The GPU ran out of memory even with the smallest batch.",
            hint="Close other programs using the GPU, or set FAMSWAP_MODEL=lite.",
        ) from exc


def run_refit(ctx: JobContext) -> Outcome:
    """Re-encode a finished swap (the job's input) to at most ``max_bytes``: the bot asks for this when Discord
    refuses a video as too large for the server. The result keeps its label (it is in the pixels) and metadata."""
    from swap_engine.label import SYNTHETIC_METADATA
    from swap_engine.video import fit_to_size

    job = ctx.job
    if job.input is None:
        raise NoFaceFound("There is no video to make smaller.", hint="Run the swap again.")
    max_bytes = int(job.payload.get("max_bytes") or ctx.settings.output_max_bytes)
    ctx.progress("convert", 10, "making the video smaller for this server")
    (ctx.folder / "input").mkdir(exist_ok=True)
    src = ctx.call(ctx.store.decrypt_to(job.input, ctx.folder / "input" / "swap.mp4"))
    out = ctx.folder / "smaller.mp4"
    fit = fit_to_size(src, out, max_bytes, metadata=SYNTHETIC_METADATA)
    return Outcome(video=out, report={"kind": "swap", "refit_of": job.payload.get("refit_of"),
                                      "bytes": fit.size_bytes, "width": fit.width, "height": fit.height})


def run_swap(ctx: JobContext) -> Outcome:
    """scan → (choose) → actor → train → convert, resuming after the last finished stage."""
    if ctx.job.payload.get("refit_of"):
        return run_refit(ctx)
    shown = str(ctx.job.payload.get("filename") or ctx.job.payload.get("clip_name") or "clip.mp4")
    stored = f"clip{_safe_suffix(shown) or '.mp4'}"
    try:
        return _run_swap(ctx, stored)
    except FamswapError as exc:  # messages name the clip as the user sent it
        exc.message = _named(exc.message, stored, shown)
        raise


def _run_swap(ctx: JobContext, stored: str) -> Outcome:
    from swap_engine.convert import ConvertOptions, convert_clip
    from swap_engine.model import load_bank

    job, payload = ctx.job, ctx.job.payload
    (identity_id,) = job.identity_ids
    identity: Identity = ctx.call(ctx.store.get_identity(job.guild_id, identity_id))
    if job.input is None:
        raise NoFaceFound("This swap has no clip attached.", hint="Send the clip again with /swap.")
    state = _restore_state(ctx)
    if state.get("stage"):
        log.info("job %d: resuming after stage %s (step %s)", job.id, state["stage"], state.get("train_step", 0))
    # The clip is stored under a fixed name: a user's file name can be anything (too long for the file system, a
    # path). ``run_swap`` puts the user's name back into messages.
    (ctx.folder / "input").mkdir(exist_ok=True)
    clip = ctx.call(ctx.store.decrypt_to(job.input, ctx.folder / "input" / stored))
    info = check_video(clip, ctx.settings)

    scan_path = ctx.folder / "scan.npz"
    if not scan_path.is_file():
        from swap_engine.assets import landmarker_path

        ctx.progress("scan", 0, "finding faces in the clip")
        scan = pipeline.scan_video(
            clip, landmarker_path(ctx.settings.models_path), max_frames=ctx.settings.max_clip_frames,
            on_progress=lambda d, t, m: ctx.progress("scan", 15 * d / t, m),
        )  # fmt: skip
        pipeline.save_scan(scan, scan_path)
        state["stage"] = "scan"
        ctx.save_state(state, _pack_state(ctx, ["scan.npz"]))
    scan = pipeline.load_scan(scan_path)

    track = payload.get("track")
    if track is None and payload.get("face") is not None:  # the bot's face: N counts from 1 (its "Face N" buttons)
        track = int(payload["face"]) - 1
    if track is None:
        if len(scan.tracks) > 1 and scan.tracks[1].score >= COMPETING_TRACK_SHARE * scan.tracks[0].score:
            # Numbered from 1, like the bot's "Face N" buttons and /swap face:N.
            sheet = pipeline.write_contact_sheet(clip, scan, ctx.folder / "tracks.jpg", first_number=1)
            # The bot's protocol: the clip is kept as the video (the job's input is released when it ends), so the
            # follow-up swap with the chosen face can be queued from it; only until the question expires (the bot
            # deletes it as soon as a face is chosen).
            return Outcome(video=clip, comparison=sheet, expires_in=ctx.store.limits.choice_seconds, report={
                "kind": "swap", "needs_choice": True, "tracks": len(scan.tracks), "faces": len(scan.tracks),
                "message": f"I found {len(scan.tracks)} faces in this clip. Which one should become "
                           f"{identity.display_name}? Pick a number.",
            })  # fmt: skip
        track = 0
    chosen = scan.track(int(track))

    actor_path = ctx.folder / f"actor-t{track}.npz"
    if not actor_path.is_file():
        ctx.progress("actor", 16, f"collecting the actor's face ({len(chosen.faces)} frames)")
        from swap_engine.assets import hair_segmenter_path

        pipeline.extract_actor(clip, scan, int(track), actor_path,
                               hair_model=hair_segmenter_path(ctx.settings.models_path))

    person = identity.engine_id
    if not (ctx.folder / "bank.pt").is_file() or state.get("stage") != "trained":
        person_faces = _identity_faces(ctx, identity)
        actor = f"actor-{job.id}"
        _train(ctx, {person: person_faces, actor: actor_path}, {identity.id: identity.faceset_version},
               state, ["scan.npz"], 20.0, 60.0)
    ctx.check()
    bank, _ = load_bank(ctx.folder / "bank.pt")
    out = ctx.folder / "swap.mp4"
    max_bytes = int(payload.get("max_bytes") or ctx.settings.output_max_bytes)
    from swap_engine.assets import hair_segmenter_path

    opts = ConvertOptions(identity=person, track=int(track), device=ctx.device, max_bytes=max_bytes,
                          hair_model=hair_segmenter_path(ctx.settings.models_path),
                          pose_range=pipeline.pose_range(_identity_faces(ctx, identity)))
    report = convert_clip(
        clip, bank, scan, out, opts,
        on_progress=lambda d, t: ctx.progress("convert", 80 + 19 * d / max(t, 1), f"swapping frame {d} of {t}")
        if d % 10 == 0 or d == t else ctx.check(),
        comparison_path=ctx.folder / "compare.gif",
    )  # fmt: skip
    comparison = Path(report.comparison) if report.comparison else None
    if comparison is not None and comparison.suffix.lower() == ".gif":
        mark_gif_synthetic(comparison)
    data = asdict(report)
    data.update({"kind": "swap", "identity": identity.display_name, "track": int(track),
                 "clip_seconds": info.duration, "train_step": state.get("train_step")})
    return Outcome(video=out, comparison=comparison, report=data)


def run_train(ctx: JobContext) -> Outcome:
    """Fine-tune the bank for the job's identities (at least two faces sets are needed for a shared encoder)."""
    identities = [ctx.call(ctx.store.get_identity(ctx.job.guild_id, i)) for i in ctx.job.identity_ids]
    faces = {i.engine_id: _identity_faces(ctx, i) for i in identities}
    state = _restore_state(ctx)
    result = _train(ctx, faces, {i.id: i.faceset_version for i in identities}, state, [], 0.0, 100.0)
    return Outcome(report={"kind": "train", "steps": result.step, "losses": result.losses})


_HANDLERS: dict[JobKind, Callable[[JobContext], Outcome]] = {
    JobKind.PREPARE: run_prepare,
    JobKind.SWAP: run_swap,
    JobKind.TRAIN: run_train,
}


# -----------------------------------------------------------------------------
# the loop


class Worker:
    """Claims jobs one at a time (per slot) and runs them; see the module docstring."""

    def __init__(self, settings: Settings, device: str | None = None, *, worker_id: str | None = None,
                 heartbeat_s: float = HEARTBEAT_S, lease_s: float = LEASE_S) -> None:
        self.settings = settings
        self.device = pipeline.resolve_device(device or settings.device)
        self.worker_id = worker_id or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        self.stopping = threading.Event()
        self.jobs_done = 0
        pipeline.configure_torch(settings.torch_thread_count())

    def request_stop(self) -> None:
        """Finish no new job; checkpoint the running one and hand it back (SIGTERM does this)."""
        self.stopping.set()

    async def run(self, *, concurrency: int = 1, once: bool = False) -> int:
        async with open_storage(self.settings) as store:
            log.info("worker %s ready on %s", self.worker_id, self.device)
            await self._retention(store)
            retention = None if once else asyncio.create_task(self._retention_loop(store))
            try:
                await asyncio.gather(*(self._slot(store, once) for _ in range(max(1, concurrency))))
            finally:
                if retention is not None:
                    retention.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await retention
        return 0

    async def _retention(self, store: Storage) -> None:
        """Delete results older than FAMSWAP_RESULT_DAYS and erase the servers whose grace period after the bot was
        removed is over. Several workers may do it at once: each erase is one transaction."""
        try:
            expired = await store.expire_results()
            erased = await store.run_due_deletions()
        except Exception:  # noqa: BLE001 - jobs must not stop for it; the next pass retries
            log.warning("retention pass failed; it runs again in %.0f s", RETENTION_EVERY_S, exc_info=True)
            return
        if expired or erased:
            log.info("retention: %d result(s) expired; server(s) erased: %s", expired, erased or "none")

    async def _retention_loop(self, store: Storage) -> None:
        while True:
            await asyncio.sleep(RETENTION_EVERY_S)
            await self._retention(store)

    async def _slot(self, store: Storage, once: bool) -> None:
        while not self.stopping.is_set():
            job = await store.wait_for_job(self.worker_id, lease_seconds=self.lease_s, timeout=0.5 if once else 1.0)
            if job is None:
                if once:
                    return
                continue
            await self.run_job(store, job)

    async def run_job(self, store: Storage, job: Job) -> None:
        loop = asyncio.get_running_loop()
        # One folder per attempt: should this worker's lease expire, the worker that takes the job over works in
        # a folder of its own, which this one's clean-up never touches.
        attempt = f"{job.attempts}-{uuid.uuid4().hex[:8]}"
        folder = store.job_dir(job.id, attempt)
        ctx = JobContext(store, job, self.worker_id, folder, loop, self.device, self.settings)
        ctx.shutting_down = self.stopping
        log.info("job %d (%s) started on %s, attempt %d", job.id, job.kind.value, self.device, job.attempts)
        beat = asyncio.create_task(self._heartbeat(ctx))
        started = time.monotonic()
        try:
            outcome = await asyncio.to_thread(_HANDLERS[job.kind], ctx)
            if ctx.cancelled.is_set():  # only a cancel stops a finished job: a shutdown now would waste all its work
                raise JobCancelled("The job was cancelled.")
            await store.complete(job.id, self.worker_id, video=outcome.video, comparison=outcome.comparison,
                                 report=outcome.report, expires_in=outcome.expires_in)
            log.info("job %d finished in %.0f s", job.id, time.monotonic() - started)
            self.jobs_done += 1
        except JobCancelled as exc:
            if isinstance(exc, LeaseLost):
                log.warning("job %d: %s", job.id, exc.message)
            else:
                log.info("job %d cancelled", job.id)
                await _quietly(store.finish_cancelled(job.id, self.worker_id))
        except _Interrupted:
            # The resume point is saved in storage: hand the job back so the next worker continues from it.
            log.info("job %d interrupted by shutdown; it will resume from its checkpoint", job.id)
            await _quietly(store.release(job.id, self.worker_id))
        except FamswapError as exc:
            log.info("job %d failed: %s", job.id, exc.user_text())
            await _quietly(store.fail(job.id, self.worker_id, exc.user_text(), retry=False))
        except Exception:
            log.exception("job %d crashed", job.id)
            await _quietly(store.fail(
                job.id, self.worker_id, "Something went wrong on our side while making this; it will be retried.",
                retry=True,
            ))  # fmt: skip
        finally:
            beat.cancel()
            store.remove_job_dir(job.id, attempt)
            await _quietly(store.sweep_job_dir(job.id))  # a finished job's folders of dead attempts go too
            _free_device(self.device)

    async def _heartbeat(self, ctx: JobContext) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                beat = await ctx.store.heartbeat(ctx.job.id, self.worker_id, lease_seconds=self.lease_s)
            except LeaseLost:
                ctx.cancelled.set()
                return
            except Exception:  # noqa: BLE001 - a missed beat is retried; the lease has slack
                log.warning("job %d: heartbeat failed; retrying", ctx.job.id, exc_info=True)
                continue
            if beat.cancel_requested:
                ctx.cancelled.set()


async def _quietly(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        await coro
    except Exception:  # noqa: BLE001 - the lease may be gone already; the queue re-queues on expiry
        log.warning("could not record the job's end", exc_info=True)


def _free_device(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def run_worker(settings: Settings, *, device: str | None = None, concurrency: int = 1, once: bool = False) -> int:
    """`famswap worker`: run until SIGTERM/Ctrl-C (or, with ``once``, until the queue is empty)."""
    worker = Worker(settings, device)

    def stop(*_: object) -> None:
        log.info("stopping: checkpointing the running job")
        worker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return asyncio.run(worker.run(concurrency=concurrency, once=once))


# -----------------------------------------------------------------------------
# the command line's enroll goes through the same storage and worker


@dataclass
class EnrollOutcome:
    lines: list[str]
    summary: str
    kept: int


async def enroll_local(settings: Settings, guild_id: int, user_id: int, name: str, paths: list[Path]) -> EnrollOutcome:
    """Store the inputs for ``name`` (created if new), run the prepare job here, and report per input."""
    from famswap.errors import NotFound
    from swap_engine.media import sniff_kind

    files = [f for p in paths for f in ([p] if not p.is_dir() else sorted(x for x in p.rglob("*") if x.is_file()))]
    lines: list[str] = []
    usable: list[tuple[Path, UploadKind]] = []
    for f in files:
        if not f.is_file():
            lines.append(f"{f}: rejected — no such file")
            continue
        kind = sniff_kind(f)
        if kind is None:
            lines.append(f"{f.name}: rejected — not a photo or video famswap can read")
        elif f.stat().st_size > settings.max_upload_bytes:
            lines.append(f"{f.name}: rejected — larger than {settings.max_upload_mb:g} MB")
        else:
            usable.append((f, UploadKind.IMAGE if kind == "image" else UploadKind.VIDEO))
    if not usable:
        return EnrollOutcome(lines, f"Nothing enrolled: no usable photo or video for {name}.", 0)
    async with open_storage(settings) as store:
        created = False
        try:
            identity = await store.find_identity(guild_id, user_id, name)
        except NotFound:
            identity = await store.create_identity(guild_id, user_id, name)
            created = True
        for f, kind in usable:
            await store.add_upload(guild_id, identity.id, user_id, f, kind=kind, filename=f.name)
        job = await store.enqueue(guild_id, user_id, JobKind.PREPARE, {}, identity_ids=[identity.id],
                                  enforce_quota=False, max_attempts=1)
        worker = Worker(settings, "cpu", worker_id=f"cli-{os.getpid()}")
        claimed = await store.claim(worker.worker_id, kinds=[JobKind.PREPARE])
        while claimed is not None and claimed.id != job.id:  # run anything queued before it too
            await worker.run_job(store, claimed)
            claimed = await store.claim(worker.worker_id, kinds=[JobKind.PREPARE])
        if claimed is not None:
            await worker.run_job(store, claimed)
        done = await store.get_job(job.id)
        if done.status.value != "succeeded":
            if created:
                await store.forget_identity(guild_id, identity.id, user_id)
            return EnrollOutcome(lines + [f"{f.name}: rejected" for f, _ in usable],
                                 f"Nothing enrolled: {done.error or 'no usable face found'}", 0)
        result = await store.get_result(guild_id, job.id, user_id)
    report = result.report
    return EnrollOutcome(lines + list(report.get("lines", [])), f"{name}: {report.get('summary', '')}",
                         int(report.get("faces", 0)))

