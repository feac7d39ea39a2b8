"""A swap as named stages — scan the clip, extract the actor, train the bank, convert — each resumable on its own.

Used by `famswap swap` (all stages in one process) and by the worker (one job, stages recorded in storage). Every
stage reads and writes plain files in a work folder, so a crashed run resumes at the first unfinished stage:

    scan.npz         the clip's face tracks and the people they show (stage "scan")
    actor.npz        aligned crops, points and face-without-hair masks of a chosen person, all their shots (stage "actor")
    train.ckpt       the trainer's checkpoint (stage "train"; resumes mid-way)
    bank.pt          the trained face bank (the caller decides where it lives)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import MediaTooLarge, NoFaceFound
from swap_engine import align, video
from swap_engine.device import resolve_device as resolve_device  # the one resolver, for pipeline's callers
from swap_engine.pose_fade import PoseRange
from swap_engine.track import (
    ClipScan,
    Person,
    Track,
    attach_embeddings,
    contact_sheet,
    find_people,
    save_image,
    scan_clip,
    track_thumbnail,
)

if TYPE_CHECKING:  # torch is imported only when training: `famswap tracks` starts without it
    from swap_engine.model import FaceBank
    from swap_engine.train import Progress, TrainResult

log = logging.getLogger(__name__)

StageProgress = Callable[[float, float, str], None]  # (done, total, message)

CROP_SIZE = 256  # face sets and actor crops are stored at this size; models resize to their own
ACTOR_MAX_FACES = 400


def configure_torch(threads: int | None) -> None:
    """Set torch's intra-op threads (None: leave torch's default). On a small, shared CPU one thread trains several
    times faster than two, because two threads wait on each other whenever anything else runs."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def default_model(device: str) -> str:
    """The model a device can train well in minutes: ``lite`` on a CPU, ``hires`` on a GPU."""
    return "hires" if device.startswith("cuda") else "lite"


def choose_model(chosen: str | None, setting: str, device: str) -> str:
    """The model to train: the job's (or command's) choice, else the setting unless it is ``auto``, else by device."""
    return chosen or (setting if setting != "auto" else default_model(device))


def file_digest(path: Path, length: int = 16) -> str:
    """A short SHA-256 of a file's bytes: names caches of the same clip or photos across runs."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


# -----------------------------------------------------------------------------
# stage "scan": face tracks through the clip


def scan_video(
    clip: Path,
    landmarker: Path,
    *,
    max_faces: int = 6,
    max_frames: int | None = None,
    on_progress: StageProgress | None = None,
) -> ClipScan:
    """Detect faces in every frame (VIDEO mode, so MediaPipe tracks between frames), link them into tracks, then
    embed a few faces of each track (a second read of the clip, up to the last face needed) and group the tracks
    into people across cuts (``track.find_people`` with ``embed.group``).

    ``max_frames``: refuse a longer clip (``MediaTooLarge``) at probe time, and stop reading at the cap should the
    decoder find more frames than the probe counted."""
    from swap_engine.landmarks import LandmarkDetector

    info = video.probe(clip, max_frames=max_frames)
    fps = float(info.fps) or 30.0
    total = max(info.frame_count, 1)

    def tick(i: int) -> None:
        if on_progress is not None and (i % 10 == 0 or i + 1 == total):
            on_progress(i + 1, total, "finding faces")

    # The reader thread copies the next frames out of ffmpeg's pipe while MediaPipe looks at this one.
    frames = video.prefetch(
        video.read_frames(clip, info=info, max_frames=None if max_frames is None else max_frames + 1)
    )
    with LandmarkDetector(landmarker, max_faces=max_faces, video=True) as detector, contextlib.closing(frames):
        scan = scan_clip(_capped(frames, max_frames, clip.name), detector.detect, fps, on_frame=tick)
    if not scan.tracks:
        raise NoFaceFound(
            f"No face was found in {clip.name}.",
            hint="Try a clip where a face is clearly visible and not too small.",
        )
    from swap_engine.embed import FaceEmbedder, group

    if on_progress is not None:
        on_progress(total, total, "telling people apart")
    # A second read, up to the last face needed (the generator's ffmpeg is stopped when it is dropped).
    embedded = attach_embeddings(video.read_frames(clip, info=info), scan.tracks, FaceEmbedder().embed)
    scan = find_people(scan, group)
    log.info("%s: %d track(s), %d cut(s), %d face(s) embedded, %d person(s) offered", clip.name, len(scan.tracks),
             len(scan.cuts), embedded, len(scan.people))
    return scan


def _capped(frames: Iterator[np.ndarray], cap: int | None, name: str) -> Iterator[np.ndarray]:
    """``frames``, refusing (``MediaTooLarge``) the one past ``cap``: the decoder has the last word on the count."""
    for index, frame in enumerate(frames):
        if cap is not None and index >= cap:
            raise MediaTooLarge(f"{name} has more than {cap:,} frames.",
                                hint="Trim the clip or export it at 30 or 60 fps, then send it again.")
        yield frame


def _pose_or_nan(pose: np.ndarray | None) -> np.ndarray:
    return np.full((4, 4), np.nan, np.float32) if pose is None else pose


SCAN_FORMAT = 2  # 1 (no "format" entry): tracks only; 2: + person labels and embeddings


def save_scan(scan: ClipScan, path: Path) -> Path:
    """Store a scan (tracks with their per-frame landmarks, pose and embeddings; the person label of each track) as
    one .npz, atomically."""
    arrays: dict[str, Any] = {
        "format": np.array(SCAN_FORMAT, np.int64),
        "meta": np.array([scan.frame_count, scan.width, scan.height], np.int64),
        "cuts": np.array(sorted(scan.cuts), np.int64),
    }
    if scan.labels is not None:
        arrays["labels"] = np.array(scan.labels, np.int64)
    for t in scan.tracks:
        frames = t.frames
        arrays[f"t{t.index}_frames"] = np.array(frames, np.int64)
        arrays[f"t{t.index}_points"] = np.stack([t.faces[i].points for i in frames]).astype(np.float32)
        arrays[f"t{t.index}_pose"] = np.stack([_pose_or_nan(t.faces[i].pose) for i in frames]).astype(np.float32)
        if t.embeddings is not None:
            arrays[f"t{t.index}_embed"] = t.embeddings.astype(np.float32)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def load_scan(path: Path) -> ClipScan:
    """A scan stored by ``save_scan``; one of format 1 (before people were known) reads back with each track a
    person of its own, as it was then swapped."""
    from swap_engine.landmarks import Face

    with np.load(path) as data:
        frame_count, width, height = (int(v) for v in data["meta"])
        tracks = []
        n = 0
        while f"t{n}_frames" in data:
            frames, points, poses = data[f"t{n}_frames"], data[f"t{n}_points"], data[f"t{n}_pose"]
            faces = {
                int(i): Face(points[k], None, None, None if np.isnan(poses[k]).any() else poses[k])
                for k, i in enumerate(frames)
            }
            embeddings = data[f"t{n}_embed"] if f"t{n}_embed" in data else None
            tracks.append(Track(index=n, faces=faces, embeddings=embeddings))
            n += 1
        cuts = frozenset(int(c) for c in data["cuts"])
        labels = tuple(int(v) for v in data["labels"]) if "labels" in data else None
    return ClipScan(tracks, frame_count, cuts, width, height, labels=labels)


def write_contact_sheet(clip: Path, scan: ClipScan, out: Path, *, first_number: int = 1) -> Path:
    """One numbered tile per person offered (number = person index + ``first_number``: 1, as the bot's "Face N"
    buttons and ``famswap swap --face N`` count), from the frame with the person's best view."""
    wanted: dict[int, list[tuple[int, Track]]] = {}
    for p in scan.people:
        t = p.best_track()
        wanted.setdefault(t.best_frame(), []).append((p.index, t))
    thumbs: dict[int, np.ndarray] = {}
    last = max(wanted, default=-1)
    for i, frame in enumerate(video.read_frames(clip)):
        for person, t in wanted.get(i, []):
            thumbs[person] = track_thumbnail(frame, t.faces[i])
        if i >= last:
            break
    sheet = contact_sheet([thumbs[p.index] for p in scan.people if p.index in thumbs], first_number=first_number)
    return save_image(out, sheet)


# -----------------------------------------------------------------------------
# stage "actor": the clip's own face set of the chosen track


def choose_actor_frames(track: Track | Person, max_faces: int = ACTOR_MAX_FACES) -> list[int]:
    """Frames to learn the actor from (a track's, or a person's over all their shots): all when few, else spread
    evenly over time with the pose extremes kept."""
    frames = track.frames
    if len(frames) <= max_faces:
        return frames
    chosen = set(np.linspace(0, len(frames) - 1, max_faces - 4).round().astype(int).tolist())
    picked = {frames[k] for k in chosen}
    def yaw(i: int) -> float:
        return track.faces[i].yaw

    def pitch(i: int) -> float:
        return track.faces[i].pitch

    for key in (yaw, pitch):
        valid = [i for i in frames if not math.isnan(key(i))]
        if valid:
            picked.update((min(valid, key=key), max(valid, key=key)))
    return sorted(picked)


def extract_actor(
    clip: Path,
    scan: ClipScan,
    track: int,
    out: Path,
    *,
    max_faces: int = ACTOR_MAX_FACES,
    hair_model: Path | None = None,
) -> Path:
    """``extract_faces`` of track ``track``."""
    return extract_faces(clip, scan.track(track), out, max_faces=max_faces, hair_model=hair_model)


def extract_faces(
    clip: Path,
    actor: Track | Person,
    out: Path,
    *,
    max_faces: int = ACTOR_MAX_FACES,
    hair_model: Path | None = None,
) -> Path:
    """Aligned crops (N, 256, 256, 3) uint8, points (N, 478, 2) and face-without-hair masks (N, 256, 256) uint8
    0-255 (``segment.face_region``; hair-aware with ``hair_model``) of ``actor`` (a person: from all their shots, so
    the close-up after the wide shot is learnt as the same face), saved as one .npz."""
    from swap_engine.segment import HairSegmenter, crop_masks

    wanted = set(choose_actor_frames(actor, max_faces))
    crops, points = [], []
    for i, frame in enumerate(video.read_frames(clip)):
        if i in wanted:
            face = actor.faces[i]
            matrix = align.align_matrix(face.points, CROP_SIZE)
            crops.append(align.warp_crop(frame, matrix, CROP_SIZE))
            points.append(align.transform_points(face.points, matrix).astype(np.float32))
        if i >= actor.last:
            break
    if not crops:
        raise NoFaceFound(f"That face of {clip.name} has no usable view.", hint="Choose another face.")
    crop_stack, point_stack = np.stack(crops), np.stack(points)
    if hair_model is None:
        masks = crop_masks(crop_stack, point_stack, None)
    else:
        with HairSegmenter(hair_model) as segmenter:
            masks = crop_masks(crop_stack, point_stack, segmenter)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, crops=crop_stack, points=point_stack, masks=np.rint(masks * 255).astype(np.uint8))
    tmp.replace(out)
    return out


def load_faces(path: Path, *, hair_model: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops ``(N, S, S, 3)`` uint8, points ``(N, 478, 2)`` and masks ``(N, S, S)`` float32 of an actor .npz or of a
    face-set folder written by `faceset.build_faceset` (older files without masks get them, see load_faceset)."""
    if path.is_dir():
        from swap_engine.faceset import load_faceset

        fs = load_faceset(path, hair_model=hair_model)
        return fs.crops, fs.points, fs.masks
    with np.load(path) as data:
        crops, points = data["crops"], data["points"]
        if "masks" in data:
            return crops, points, data["masks"].astype(np.float32) / 255.0
    from swap_engine.segment import HairSegmenter, crop_masks

    if hair_model is None:
        return crops, points, crop_masks(crops, points, None)
    with HairSegmenter(hair_model) as segmenter:
        return crops, points, crop_masks(crops, points, segmenter)


def pose_range(path: Path) -> PoseRange | None:
    """The head poses a face-set folder covers (``pose_fade.PoseRange``); None for anything else (an actor .npz)."""
    if not path.is_dir():
        return None
    import json

    from swap_engine.faceset import FACESET_JSON, FaceRecord
    from swap_engine.faceset import pose_range as angles

    document = json.loads((path / FACESET_JSON).read_text(encoding="utf-8"))
    records = [FaceRecord.from_json(face) for face in document["faces"]]
    if not records:
        return None
    return PoseRange(*angles(records))


# -----------------------------------------------------------------------------
# stage "train": fine-tune the bank for the identities of this swap


@dataclass(frozen=True)
class TrainPlan:
    """What to train: identity key → faces (.npz or face-set folder); where the bank and checkpoint live."""

    faces: dict[str, Path]
    bank_path: Path
    checkpoint: Path
    model: str
    device: str
    seconds: float | None  # None: no time budget (``steps``, a plateau or ``should_stop`` ends the training)
    seed: int = 0
    batch: int | None = None
    checkpoint_every_s: float = 60.0
    hair_model: Path | None = None  # for face sets stored before masks were (older sets get theirs on load)
    steps: int | None = None  # train exactly this many steps, whatever the time (``seconds`` is then ignored)
    # Warming (a bank trained while the worker is idle): stop when the loss has not improved by 1 % in this many
    # steps (None: never), and keep the learning rate constant (no decay at the end of a budget that is only a
    # day's share of a run that goes on tomorrow).
    plateau_steps: int | None = None
    constant_lr: bool = False
    previews: bool = True  # preview grids for the progress (a warm job shows none)


def open_bank(bank_path: Path, model: str, identities: list[str],
              closest: Callable[[FaceBank, str], str | None] | None = None) -> FaceBank:
    """Load the bank, or create one; add decoders for identities it lacks, each a copy of an existing one:
    ``closest(bank, identity)``'s choice (the decoder that already draws that identity's faces best), else the
    first."""
    from swap_engine.model import FaceBank, load_bank, model_config

    if bank_path.is_file():
        bank, _ = load_bank(bank_path)
        if bank.cfg.name != model:
            log.info("the saved face bank uses the %s model; keeping it (asked for %s)", bank.cfg.name, model)
    else:
        bank = FaceBank(model_config(model))
    known = list(bank.identities)
    for identity in identities:
        if identity not in bank.identities:
            start = (closest(bank, identity) if closest is not None and known else None) or (
                known[0] if known else None)
            if start is not None:
                log.info("the new decoder %s starts as a copy of %s's", identity, start)
            bank.add_identity(identity, init_from=start)
    return bank


def train_bank(
    plan: TrainPlan,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train the plan's identities (resuming ``plan.checkpoint`` if present) and save the bank."""
    from swap_engine.model import save_bank
    from swap_engine.train import TrainConfig, Trainer, closest_decoder, make_trainset

    data: dict[str, Any] = {}
    loaded = {identity: load_faces(path, hair_model=plan.hair_model) for identity, path in plan.faces.items()}

    def trainset(identity: str, size: int) -> Any:
        if identity not in data:
            crops, points, masks = loaded[identity]
            data[identity] = make_trainset(crops, points, size, masks=masks)
        return data[identity]

    def closest(bank: FaceBank, identity: str) -> str | None:
        # The existing decoder that already draws this person's faces best (the bank's own reconstruction loss,
        # never a face-recognition embedding) learns them fastest.
        return closest_decoder(bank, trainset(identity, bank.cfg.out_size), device=plan.device)

    bank = open_bank(plan.bank_path, plan.model, sorted(plan.faces), closest)
    for identity in plan.faces:
        trainset(identity, bank.cfg.out_size)
    cfg_args: dict[str, Any] = {
        "budget_seconds": None if plan.steps else plan.seconds,
        "max_steps": plan.steps,
        "device": plan.device,
        "seed": plan.seed,
        "checkpoint_every_s": plan.checkpoint_every_s,
        "preview_every_s": 15.0 if plan.previews else None,
        "plateau_patience": plan.plateau_steps,
    }
    if plan.constant_lr:
        cfg_args["decay_from"] = None
    if plan.batch:
        cfg_args["batch"] = plan.batch
    trainer = Trainer(bank, data, TrainConfig(**cfg_args), plan.checkpoint)
    result = trainer.run(on_progress=on_progress, should_stop=should_stop)
    save_bank(plan.bank_path, bank, {"trained_steps": result.step})
    return result
