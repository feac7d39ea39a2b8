"""Swap a clip: per frame align → encode → decode as the person → their own detail → colour-match → mask + blend →
label → encode.

Inputs: the clip (path), a trained `FaceBank`, the `ClipScan` of the clip (tracks of faces in frame pixels, grouped
into people), and who to draw: ``ConvertOptions.targets``, several people of the scan each as an identity of the
bank, in one pass (each with its own temporal state; or, without targets, track ``track`` as ``identity``). Frames
are streamed from ffmpeg and written back to ffmpeg in order; model calls are batched across frames. Frames where
no chosen face is present, large enough and turned towards the camera are written unchanged (apart from the label
every output frame carries); the report counts per person the frames swapped. The output keeps the clip's fps, frame count and audio, carries synthetic-media
metadata, and is fitted to a byte limit.

What is drawn: the decoder's face, scaled to the blend crop, with its detail finer than half the decoder's side (over
the eyes, an eighth) replaced by the person's own, from the enrolled faces of their face set most like the actor's
eyes and mouth (``person_detail.py``; ``ConvertOptions.person_detail``, on when the target has a ``faceset``).

Where the swap shows: the actor's face without hair (``segment.face_region`` on each frame's crop, with the hair
segmenter when ``ConvertOptions.hair_model`` is set; smoothed over frames) (∩ the decoder's learned mask only with
``ConvertOptions.learned_mask``) × the pose weight (``pose_fade``: fades out, never pops, where the actor
turns past the poses the person enrolled) × (optionally) not the actor's mouth opening. Everything else, the
actor's hair and fringe in front of the face included, is the actor's own frame.

How the work overlaps (results are the same as doing it one frame after another): a reader thread copies decoded
frames out of ffmpeg's pipe (``video.prefetch``); the calling thread aligns each face and hands its 256 px view to
the hair segmenter, which runs on ``hair_threads`` threads of its own (MediaPipe computes outside the GIL); a batch
goes to the model and is blended only once the next batch has been aligned, so segmenting one batch overlaps the
model and blending of the one before; masking and pasting faces back run on ``blend_threads`` threads (OpenCV works
outside the GIL; colour matching, which carries statistics from frame to frame, stays in order); a writer thread
labels each frame and feeds the encoder (ffmpeg encodes in its own process). Frames are modified in place, never copied whole. ``ConvertReport.timings`` (seconds): ``decode``,
``hair_wait`` and ``encode_wait`` are the calling thread waiting for the reader, the segmenter and the writer;
``align``, ``model``, ``blend`` its own work (``person_detail``, part of ``blend``); ``hair`` the segmenter's busy
time summed over its threads; ``label`` and ``encode`` the writer thread's busy time (``encode``: writing to ffmpeg's pipe, i.e. waiting for the encoder).
Stages overlap, so they add up to more than ``total``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from swap_engine import align, blend, color, label, smooth, video
from swap_engine.landmarks import LIPS_INNER
from swap_engine.person_detail import ReferenceDetail, load_references
from swap_engine.pose_fade import ADVICE, FADED_BELOW, FadeFilter, PoseRange
from swap_engine.segment import part_hulls, skin_weight
from swap_engine.track import MIN_SWAP_FACE_PX, ClipScan

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

# Radius (Gaussian sigma) of the unsharp mask, in pixels of the model's input face (64 px for lite). See
# FrameSwapper.sharpen.
SHARPEN_SIGMA_MODEL_PX = 1.5
# How much of the previous frames' hair map carries into this frame's (crops are aligned on smoothed landmarks, so
# hair stays put in crop space; this calms the segmenter's frame-to-frame shimmer at strand edges).
HAIR_MEMORY = 0.5
HAIR_CROP_PX = 256  # the side of the crop the hair segmenter looks at
# Colour matching may change the spread of the decoder's lightness and colour by this factor at most: it is there to
# fix the light and the tint. A briefly trained decoder draws a flatter face than the actor's, and letting the
# transfer restore that contrast (up to 3x) turned soft eyes and lips into black holes (docs/QUALITY.md).
COLOUR_MAX_GAIN = 1.25


@dataclass(frozen=True)
class SwapTarget:
    """One person of the clip (an index of ``ClipScan.people``: "Face N" is N - 1) drawn as ``identity`` (a decoder
    of the bank), fading where they turn past ``pose_range`` (the poses that identity enrolled; None: never)."""

    person: int
    identity: str
    pose_range: PoseRange | None = None
    faceset: Path | None = None  # the identity's face-set folder: their own detail (ConvertOptions.person_detail)


# ConvertOptions.detail_keeps: the features (segment.FEATURES) that stay the decoder's under the actor's detail.
DETAIL_KEEPS = {"skin": ("eyes", "nose", "lips"), "no-eyes": ("eyes",), "face": ()}


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert; the defaults are the ones famswap ships with."""

    identity: str = ""
    track: int = 0
    # Several people at once, each drawn as its identity (``identity``, ``track`` and ``pose_range`` are then
    # unused); empty: track ``track`` of the scan drawn as ``identity``.
    targets: tuple[SwapTarget, ...] = ()
    color: str = "reinhard"  # "reinhard", "histogram" or "none"
    blend: str = "alpha"  # "alpha" (feathered) or "poisson" (cv2.seamlessClone)
    batch: int | None = None  # faces per model call; None: 16 on a CPU, 64 on a GPU
    min_face_px: float = MIN_SWAP_FACE_PX  # faces smaller than this (inter-ocular based size) pass through
    max_abs_yaw: float = 70.0  # faces turned further away pass through
    max_bytes: int | None = 10 * 1024 * 1024
    label_style: label.LabelStyle = field(default_factory=label.LabelStyle)
    comparison_frames: int = 24
    device: str = "cpu"
    sharpen: float = 1.0  # unsharp-mask amount on the decoder's face, 0 = off (see FrameSwapper.sharpen)
    hair_model: Path | None = None  # hair_segmenter.tflite: keep the actor's hair in front; None: landmark hull only
    pose_range: PoseRange | None = None  # the poses the person enrolled; None: never fade
    keep_mouth: bool = False  # keep the actor's mouth opening (teeth, tongue) instead of the decoder's
    # Also cut the paste by the decoder's learned mask. Off: it learns where the *person's* hair hid their face, so it
    # cut a long-haired person's temples and forehead out of every swap (W→M gallery top-1 56.5 % without it, 0 %
    # with it, same bank; docs/QUALITY.md). The actor's own hair is kept by the actor's mask either way.
    learned_mask: bool = False
    crop_px: int | None = None  # side of the crop that is colour-matched and blended; None: the decoder's output
    detail: float = 0.0  # how much of the actor's finest detail (above detail_sigma) to lay over the face, 0 = off
    # In pixels of the model's input face: detail finer than this is the actor's. 0: exactly what the model's
    # resolution cannot hold (the crop minus the crop seen at the model's size), nothing the decoder could draw.
    detail_sigma: float = 1.0
    # Where the decoder's own features stay free of it: "skin" (eyes with brows, nose and lips stay the decoder's),
    # "no-eyes" (eyes and brows stay), "face" (nowhere).
    detail_keeps: str = "skin"
    # How much of the person's own detail to lay over the drawn face (person_detail.py: from the enrolled faces of
    # ``faceset`` most like the actor's expression, warped onto the face; 0 = off). Detail finer than a face
    # ``person_detail_px`` wide is theirs (None: half the decoder's output side, below which a briefly trained
    # decoder's features are soft). A decoder that already draws the blend crop's side (``hires``) gets none.
    # Measured (docs/QUALITY.md Rounds 5-6): both pairs' likeness and sharpness up, eyes with lids, whites and irises.
    person_detail: float = 1.0
    person_detail_px: int | None = None
    # ... and over the eyes, detail finer than a face this wide (None: an eighth of the decoder's side): a decoder's
    # eye a few pixels wide is a dark blob, and the person's own eye (lids, white, iris) replaces all but its light.
    person_eye_px: int | None = None
    # ... and over the mouth all of it but the light of the skin round the lips: their own lips and mouth, warped open
    # or shut to the actor's opening as far as a mouth stretches (person_detail.STRETCH_FULL): the decoder's small
    # soft O for a shout the person never made, and its parted lips over an actor's closed ones, are gone.
    person_mouth: bool = True
    faceset: Path | None = None  # the person's face-set folder (with ``targets``: each SwapTarget's own)
    hair_threads: int | None = None  # threads running the hair segmenter; None: half the CPU cores, 1 to 4
    blend_threads: int | None = None  # threads masking and pasting faces; None: 1 up to 4 cores, else cores/4 (<= 4)

    def __post_init__(self) -> None:
        if not self.targets and not self.identity:
            raise ValueError("ConvertOptions needs an identity (with a track) or targets")
        if self.detail_keeps not in DETAIL_KEEPS:
            raise ValueError(f"detail_keeps must be one of {sorted(DETAIL_KEEPS)}, got {self.detail_keeps!r}")

    def batch_size(self) -> int:
        """Faces per model call: ``batch``, else 16 on a CPU and 64 on a GPU (where a call costs the same)."""
        if self.batch is not None:
            return max(1, int(self.batch))
        return 16 if self.device == "cpu" else 64

    def hair_thread_count(self) -> int:
        if self.hair_threads is not None:
            return max(1, int(self.hair_threads))
        return max(1, min(4, (os.cpu_count() or 1) // 2))

    def blend_thread_count(self) -> int:
        if self.blend_threads is not None:
            return max(1, int(self.blend_threads))
        cores = os.cpu_count() or 1
        return 1 if cores <= 4 else min(4, cores // 4)


@dataclass
class ConvertReport:
    """What conversion did, written beside the output as JSON."""

    output: str
    frames: int
    swapped: int
    skipped: dict[str, int]
    track: int
    tracks: int
    fps: str
    has_audio: bool
    bytes: int
    fitted: bool
    timings: dict[str, float]
    comparison: str | None = None
    faded: int = 0  # swapped frames shown only partly because the actor turns past the enrolled poses
    notes: list[str] = field(default_factory=list)  # sentences for the user (e.g. how to enroll turned heads)
    # Per target, in ``ConvertOptions.targets``' order: {"face": N (as on the contact sheet), "identity", "frames"
    # (where the person is seen), "swapped", "skipped": {reason: frames}}. ``swapped`` above counts frames where at
    # least one face was swapped, ``skipped`` the others by the first target's reason.
    people: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass
class _Pending:
    index: int
    frame: np.ndarray
    matrix: np.ndarray | None = None
    crop: np.ndarray | None = None
    points: np.ndarray | None = None
    hair: np.ndarray | None = None  # (S, S) float32 hair probability of the crop, smoothed over frames
    hair_job: Future[np.ndarray] | None = None  # the segmenter's raw map of the 256 px view, until settled
    weight: float = 1.0  # pose weight
    fresh: bool = False  # the first face after a reset: temporal state (hair memory, colour) starts over here
    model_crop: np.ndarray | None = None  # the same face cut at the model's input size, when that differs


class _Timer:
    """Seconds per stage, added to from several threads."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, name: str, start: float) -> None:
        elapsed = time.perf_counter() - start
        with self._lock:
            self.totals[name] = self.totals.get(name, 0.0) + elapsed


def skip_reason(face: object | None, opts: ConvertOptions) -> str | None:
    """Why a frame's face is not swapped, or None when it is."""
    if face is None:
        return "no face"
    if face.size < opts.min_face_px:  # type: ignore[attr-defined]
        return "face too small"
    if abs(face.yaw) > opts.max_abs_yaw:  # type: ignore[attr-defined]
        return "face turned away"
    return None


class FrameSwapper:
    """The per-frame work, holding the state that must carry across frames (smoothing, colour statistics).

    ``start`` (in frame order) aligns a face and sets its hair segmentation going; ``finish`` (on batches, in the
    same order) settles the hair maps, runs the model and composites. ``prepare`` is ``start`` that waits for the
    hair map. The frames' results do not depend on how far ``start`` runs ahead of ``finish``.
    """

    def __init__(
        self, bank: object, opts: ConvertOptions, fps: float, coverage: float, timer: _Timer | None = None
    ) -> None:
        self.bank = bank
        self.opts = opts
        self.fps = fps
        # Crops are blended at the decoder's output size or ``crop_px``; the encoder's input is cut from the frame
        # at its own size, as the face sets it learnt from were (a crop resized in between reads softer).
        self.model_size: int = bank.cfg.size  # type: ignore[attr-defined]
        self.detail: ReferenceDetail | None = None
        crop_px = opts.crop_px
        out_size: int = bank.cfg.out_size  # type: ignore[attr-defined]
        if opts.person_detail > 0 and opts.faceset is not None:
            try:
                refs = load_references(opts.faceset, coverage)
                side = crop_px or max(refs.size, out_size)  # blended at the face set's side
                if side > out_size:  # a decoder that draws the crop's side (hires) needs none
                    self.detail = ReferenceDetail(refs.resized(side), out_size, amount=opts.person_detail,
                                                  band_px=opts.person_detail_px or out_size // 2,
                                                  eye_px=opts.person_eye_px or out_size // 8,
                                                  mouth=opts.person_mouth)  # fmt: skip
                    crop_px = side
            except (OSError, ValueError, KeyError) as exc:
                # The swap goes on without it: the drawn face alone, as before this detail existed.
                log.warning("the face set in %s could not be read for detail (%s); swapping without it",
                            opts.faceset, exc)  # fmt: skip
        self.size: int = crop_px or bank.cfg.out_size  # type: ignore[attr-defined]
        self.coverage = coverage
        self.points_filter = smooth.OneEuroFilter(vector_axis=-1)
        self.colour = (
            color.ColorStabilizer(method=opts.color, max_gain=COLOUR_MAX_GAIN) if opts.color != "none" else None
        )
        self.timer = timer or _Timer()  # several swappers of one conversion share one
        self._last_index = -10
        self._fresh = True  # the next face starts temporal state over (set by reset)
        self._hair_pool: ThreadPoolExecutor | None = None
        self._segmenters: list[object] = []  # one per segmenter thread (a MediaPipe graph is not shared)
        self._local = threading.local()
        self._lock = threading.Lock()
        if opts.hair_model is not None:
            self._hair_pool = ThreadPoolExecutor(opts.hair_thread_count(), thread_name_prefix="hair")
            self._hair_pool.submit(self._segmenter).result()  # fail now (bad model file), not at the first face
        self._blend_pool: ThreadPoolExecutor | None = None  # made at the first batch that can use it
        self._hair: np.ndarray | None = None
        self.fade = FadeFilter()
        self.faded = 0

    def _segmenter(self) -> object:
        """This thread's HairSegmenter, made on first use."""
        segmenter = getattr(self._local, "segmenter", None)
        if segmenter is None:
            from swap_engine.segment import HairSegmenter

            assert self.opts.hair_model is not None
            segmenter = self._local.segmenter = HairSegmenter(self.opts.hair_model)
            with self._lock:
                self._segmenters.append(segmenter)
        return segmenter

    def _segment(self, view: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        hair = self._segmenter().hair(view)  # type: ignore[attr-defined]
        self.timer.add("hair", start)
        return hair

    def close(self) -> None:
        if self._blend_pool is not None:
            self._blend_pool.shutdown(wait=True)
            self._blend_pool = None
        if self._hair_pool is not None:
            self._hair_pool.shutdown(wait=True, cancel_futures=True)
            self._hair_pool = None
        for segmenter in self._segmenters:
            segmenter.close()  # type: ignore[attr-defined]
        self._segmenters.clear()

    def learn_actor(self, faces: list[Any]) -> None:
        """Show the person's detail picker the actor's faces over the clip (``landmarks.Face``, frame pixels), so it
        compares expressions, not the two people's features."""
        if self.detail is None or not faces:
            return
        step = max(1, len(faces) // 200)
        crops = []
        for face in faces[::step]:
            points = face.points.astype(np.float64)
            crops.append(align.transform_points(points, align.align_matrix(points, self.size, self.coverage)))
        self.detail.learn_actor(crops)

    def reset(self) -> None:
        """Forget temporal state: at scene cuts and when the face comes back after a gap. The smoothing of points
        and pose restarts now; the hair memory and colour statistics restart at the next face ``finish`` meets."""
        self.points_filter.reset()
        self.fade.reset()
        self._fresh = True

    def prepare(self, index: int, frame: np.ndarray, face: object | None) -> _Pending:
        """``start``, then wait for the hair map (``pending.hair`` set)."""
        pending = self.start(index, frame, face)
        self._settle(pending)
        return pending

    def start(self, index: int, frame: np.ndarray, face: object | None) -> _Pending:
        """Align the frame's face (smoothed over time) and start its hair segmentation, or mark the frame as
        pass-through when ``face`` is None (the caller passes None for frames whose face is absent or not
        swappable, see ``skip_reason``). Call in frame order."""
        if face is None:
            return _Pending(index, frame)
        start = time.perf_counter()
        if index - self._last_index > 2:
            self.reset()
        self._last_index = index
        points = self.points_filter(face.points.astype(np.float64), index / self.fps)  # type: ignore[attr-defined]
        matrix = align.align_matrix(points, self.size, coverage=self.coverage)
        crop = align.warp_crop(frame, matrix, self.size)
        crop_points = align.transform_points(points, matrix)
        model_crop = None
        if self.model_size != self.size:
            model_crop = align.warp_crop(frame, matrix * (self.model_size / self.size), self.model_size)
        pending = _Pending(index, frame, matrix, crop, crop_points, model_crop=model_crop, fresh=self._fresh)
        self._fresh = False
        if self._hair_pool is not None:
            # The segmenter reads hair from a 256 px view of the same crop: at a model's 64-128 px it misses strands.
            scale = HAIR_CROP_PX / self.size
            view = align.warp_crop(frame, matrix * scale, HAIR_CROP_PX) if scale != 1 else crop
            pending.hair_job = self._hair_pool.submit(self._segment, view)
        self.timer.add("align", start)
        if self.opts.pose_range is not None:
            target = self.opts.pose_range.weight(face.yaw, face.pitch)  # type: ignore[attr-defined]
            pending.weight = self.fade(target)
            self.faded += pending.weight < FADED_BELOW
        return pending

    def _settle(self, p: _Pending) -> None:
        """Wait for ``p``'s hair map and fold it into the memory of earlier frames. Call in frame order."""
        if p.crop is None or p.hair is not None:
            return
        if p.fresh:
            self._hair = None
        if p.hair_job is None:
            return
        start = time.perf_counter()
        hair = p.hair_job.result()
        p.hair_job = None
        self.timer.add("hair_wait", start)
        if hair.shape != (self.size, self.size):
            hair = cv2.resize(hair, (self.size, self.size), interpolation=cv2.INTER_AREA)
        if self._hair is not None:
            hair = HAIR_MEMORY * self._hair + (1.0 - HAIR_MEMORY) * hair
        self._hair = p.hair = hair

    def finish(self, batch: list[_Pending], *, inplace: bool = False) -> list[np.ndarray]:
        """Run the model on the batch's faces and composite them back; returns the frames in order (``inplace``:
        the batch's own frames, drawn on; else new arrays for the swapped ones). Batches in frame order."""
        from swap_engine.train import swap_faces

        faces = [p for p in batch if p.crop is not None]
        if faces:
            for p in faces:
                self._settle(p)
            start = time.perf_counter()
            crops = np.stack([p.crop for p in faces])
            if faces[0].model_crop is None:
                swapped, learned = swap_faces(self.bank, crops, self.opts.identity, device=self.opts.device)
            else:
                inputs = np.stack([p.model_crop for p in faces])
                swapped, learned = swap_faces(
                    self.bank, inputs, self.opts.identity, device=self.opts.device, as_drawn=True
                )
                swapped = align.rescale_crops(swapped, self.size, cv2.INTER_CUBIC)
                learned = None if learned is None else align.rescale_crops(learned, self.size, cv2.INTER_LINEAR)
            self.timer.add("model", start)
            start = time.perf_counter()
            swapped = self.sharpen(swapped)
            if self.opts.detail > 0:
                swapped = self.add_detail(swapped, crops, [p.points for p in faces])
            if self.detail is not None:
                dt = time.perf_counter()
                detailed = []
                for face, p in zip(swapped, faces, strict=True):
                    if p.fresh:  # a cut or a gap: the picks start over, like the colour statistics
                        self.detail.reset()
                    assert p.points is not None
                    detailed.append(self.detail.apply(face, p.points))
                swapped = np.stack(detailed)
                self.timer.add("person_detail", dt)
            # The actor's masks and the pasting are per frame, so they may run on the blend threads; colour matching
            # carries its statistics from frame to frame, so it runs here, in frame order.
            actors = self._map(self.actor_mask, faces)
            matched = []
            for p, face, actor in zip(faces, swapped, actors, strict=True):
                if p.fresh and self.colour is not None:
                    self.colour.reset()
                if self.colour is None:
                    matched.append(face)
                    continue
                # Fitted on the skin alone (eyes, brows and lips of a briefly trained decoder are soft and pale),
                # with the spread's change capped (COLOUR_MAX_GAIN): the light and tint match, no black-hole eyes.
                assert p.points is not None
                weight = actor * skin_weight(p.points, self.size)
                fit = None
                if p.model_crop is not None:  # fitted where the face was drawn (see ColorStabilizer.apply)
                    n = self.model_size
                    fit = (cv2.resize(face, (n, n), interpolation=cv2.INTER_AREA), p.model_crop,
                           cv2.resize(weight, (n, n), interpolation=cv2.INTER_AREA))  # fmt: skip
                matched.append(self.colour.apply(face, p.crop, weight, fit=fit))
            masks = [None] * len(faces) if learned is None or not self.opts.learned_mask else list(learned)
            jobs = list(zip(faces, matched, actors, masks, strict=True))
            pasted = self._map(lambda job: self._paste(*job, inplace=inplace), jobs)
            for p, frame in zip(faces, pasted, strict=True):
                p.frame = frame
            self.timer.add("blend", start)
        return [p.frame for p in batch]

    def add_detail(self, faces: np.ndarray, crops: np.ndarray, points: list[np.ndarray | None]) -> np.ndarray:
        """The decoder's faces ``(N, S, S, 3)`` plus ``opts.detail`` times the actor crops' detail finer than
        ``opts.detail_sigma`` model pixels (crop minus its Gaussian blur; with ``detail_sigma`` 0, crop minus the
        crop brought down to the model's size and back: the band a decoder reading ``model_size`` px faces cannot
        draw). The features ``opts.detail_keeps`` names, where a face's identity lives, stay the decoder's
        (``skin_weight``)."""
        side = faces.shape[1]
        sigma = self.opts.detail_sigma * side / self.model_size
        amount = np.float32(self.opts.detail)
        keep = DETAIL_KEEPS[self.opts.detail_keeps]
        out = np.empty_like(faces)
        for n, (face, crop) in enumerate(zip(faces, crops, strict=True)):
            source = crop.astype(np.float32)
            if sigma > 0:
                coarse = cv2.GaussianBlur(source, (0, 0), sigma)
            else:
                small = cv2.resize(source, (self.model_size, self.model_size), interpolation=cv2.INTER_AREA)
                coarse = cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
            fine = source - coarse
            pts = points[n]
            if pts is not None and keep:
                fine *= skin_weight(pts, side, keep)[..., None]
            out[n] = np.clip(face.astype(np.float32) + amount * fine + 0.5, 0, 255).astype(np.uint8)
        return out

    def _map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """``[fn(x) for x in items]``, on the blend threads when there are several."""
        threads = self.opts.blend_thread_count()
        if threads < 2 or len(items) < 2:
            return [fn(x) for x in items]
        if self._blend_pool is None:
            self._blend_pool = ThreadPoolExecutor(threads, thread_name_prefix="blend")
        return list(self._blend_pool.map(fn, items))

    def sharpen(self, faces: np.ndarray) -> np.ndarray:
        """Unsharp mask (``opts.sharpen`` amount) on the decoder's faces ``(N, S, S, 3)`` at the features' scale.

        A decoder trained for minutes on a CPU draws a soft face: brows, eyelids, nostrils and lips come out as
        blurred blobs. Boosting detail at a radius of 1.5 px of the model's face (brow and lip sized, not pixel
        sized: a smaller radius brings out the decoder's blotchy 64 px texture instead) makes those features read.
        Judged on one 831-step lite bank (selfie_woman_short as selfie_man, docs/QUALITY.md), without → with:
        id_retrieval 92.7 → 100 %, gallery_top1 82.5 → 94.4 %, sharpness 0.32 → 0.35, det_delta -0.56 → -0.47,
        flicker 0.77 → 0.81, expr_err 0.058 → 0.059; pose_err rose 5.8 → 6.5 degrees.
        """
        amount = float(self.opts.sharpen)
        if amount <= 0:
            return faces
        sigma = SHARPEN_SIGMA_MODEL_PX * faces.shape[1] / self.model_size  # the same radius whatever the crop size
        out = np.empty_like(faces)
        for n, face in enumerate(faces):
            blurred = cv2.GaussianBlur(face, (0, 0), sigma)
            out[n] = cv2.addWeighted(face, 1.0 + amount, blurred, -amount, 0)  # saturates to 0..255
        return out

    def actor_mask(self, p: _Pending) -> np.ndarray:
        """``(S, S)`` float32 hard-edged mask of where the actor's frame shows face: the hull without hair (raised
        over the forehead, since hair is taken out) when a hair map is at hand, else the hull up to the brows."""
        from swap_engine.segment import face_region

        assert p.points is not None
        if p.hair is None:
            return align.face_mask(p.points, self.size, forehead=False, feather_px=0)
        return face_region(p.points, self.size, p.hair, feather_px=0)

    def _paste(
        self, p: _Pending, face: np.ndarray, actor: np.ndarray, learned: np.ndarray | None, *, inplace: bool = False
    ) -> np.ndarray:
        """``p``'s frame with ``face`` (colour-matched) pasted through the actor's mask (hard-edged, feathered here)
        ∩ the decoder's ``learned`` mask, faded by the pose weight."""
        assert p.points is not None and p.matrix is not None
        mask = blend.combine_masks(actor, learned)
        if self.opts.keep_mouth:
            mask = mask * (1.0 - mouth_mask(p.points, self.size))
        # Erode at least as far as the feather reaches, so the soft edge stays inside the face (no hair ghosts).
        edge = max(2, round(self.size * 0.05))
        mask = blend.erode_feather(mask, erode_px=edge, feather_px=edge)
        if p.weight < 1.0:
            mask = mask * np.float32(p.weight)
        return blend.composite(p.frame, face, p.matrix, mask, mode=self.opts.blend, inplace=inplace)


def mouth_mask(points: np.ndarray, size: int) -> np.ndarray:
    """``(size, size)`` float32 in {0, 1}: the mouth opening (inside the inner lip line), grown by 1 % of ``size``
    so the teeth's edge is the actor's too. Empty when the mouth is closed."""
    return part_hulls(points, size, (LIPS_INNER,), 0.01)


def convert_clip(
    clip: Path,
    bank: object,
    scan: ClipScan,
    out: Path,
    opts: ConvertOptions,
    *,
    coverage: float | None = None,
    on_progress: ProgressFn | None = None,
    comparison_path: Path | None = None,
) -> ConvertReport:
    """Write ``out``: the clip with each of ``opts.targets``' people drawn as its identity (without targets: track
    ``opts.track`` as ``opts.identity``). See the module doc."""
    started = time.perf_counter()
    info = video.probe(clip)
    fps = float(info.fps)
    cover = align.DEFAULT_COVERAGE if coverage is None else coverage
    timer = _Timer()
    if opts.targets:
        targets = [(scan.person(t.person).faces,
                    replace(opts, identity=t.identity, pose_range=t.pose_range, faceset=t.faceset))
                   for t in opts.targets]  # fmt: skip
    else:
        targets = [(scan.track(opts.track).faces, opts)]
    swappers = [FrameSwapper(bank, o, fps, cover, timer) for _, o in targets]
    for (faces_of, _), swapper in zip(targets, swappers, strict=True):
        swapper.learn_actor(list(faces_of.values()))
    renderer = label.LabelRenderer(info.width, info.height, opts.label_style)
    total = scan.frame_count
    sample_at = set(np.linspace(0, max(total - 1, 0), num=min(opts.comparison_frames, total), dtype=int).tolist())
    before: dict[int, np.ndarray] = {}  # sampled input frames, small
    after: dict[int, np.ndarray] = {}  # their output
    skipped: dict[str, int] = {}
    per_target: list[dict[str, Any]] = [{"frames": 0, "swapped": 0, "skipped": {}} for _ in targets]
    swapped = 0
    written = 0
    raw = out.with_name(out.stem + ".raw.mp4")
    out.parent.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    batch_size = opts.batch_size()
    with contextlib.ExitStack() as stack:
        for swapper in swappers:
            stack.callback(swapper.close)
        writer = stack.enter_context(video.VideoWriter(
            raw, info.width, info.height, info.fps, audio_from=clip if info.has_audio else None,
            metadata=label.SYNTHETIC_METADATA,
        ))  # fmt: skip
        encoder = stack.enter_context(_Encoder(writer, renderer, timer, sample_at))
        frames = stack.enter_context(contextlib.closing(video.prefetch(video.read_frames(clip, info=info))))
        filling: list[list[_Pending]] = []  # per frame, one pending per target
        faces_in = 0
        aligned: deque[list[list[_Pending]]] = deque()  # full batches whose hair maps are still being made

        def hand_over(batch: list[list[_Pending]]) -> None:
            # Each target draws on the frame as the targets before it left it (in place, or a new array in
            # poisson mode); the crops were all cut from the clip's own frame in ``start``.
            for k, swapper in enumerate(swappers):
                drawn = swapper.finish([row[k] for row in batch], inplace=True)
                if k + 1 < len(swappers):
                    for row, frame in zip(batch, drawn, strict=True):
                        row[k + 1].frame = frame
            encoder.put([row[-1] for row in batch], drawn)
            if on_progress is not None:
                on_progress(encoder.handed, total)

        decode_start = time.perf_counter()
        for index, frame in enumerate(frames):
            timer.add("decode", decode_start)
            if index in scan.cuts:
                for swapper in swappers:
                    swapper.reset()
            if index in sample_at:
                before[index] = _small(frame)  # a small copy now: the frame itself is drawn on in place
            row = []
            reasons = []
            for (faces, o), swapper, counts in zip(targets, swappers, per_target, strict=True):
                face = faces.get(index)
                reason = skip_reason(face, o)
                counts["frames"] += face is not None
                if reason:
                    counts["skipped"][reason] = counts["skipped"].get(reason, 0) + 1
                else:
                    counts["swapped"] += 1
                reasons.append(reason)
                row.append(swapper.start(index, frame, None if reason else face))
            first = reasons[0]
            if first is not None and all(reasons):
                skipped[first] = skipped.get(first, 0) + 1
            else:
                swapped += 1
            filling.append(row)
            faces_in += sum(p.crop is not None for p in row)
            if faces_in >= batch_size or len(filling) >= 4 * batch_size:
                aligned.append(filling)
                filling, faces_in = [], 0
                # Segmenting this batch overlaps the model and blending of the one before.
                if len(aligned) > 1:
                    hand_over(aligned.popleft())
            decode_start = time.perf_counter()
        while aligned:
            hand_over(aligned.popleft())
        if filling:
            hand_over(filling)
        encoder.finish()
        written = encoder.written
        after = encoder.after
    timer.totals["total_pipeline"] = time.perf_counter() - start

    fitted = False
    start = time.perf_counter()
    if opts.max_bytes is not None and raw.stat().st_size > opts.max_bytes:
        video.fit_to_size(raw, out, opts.max_bytes, metadata=label.SYNTHETIC_METADATA)
        raw.unlink()
        fitted = True
    else:
        shutil.move(raw, out)
    timer.add("fit", start)

    comparison = None
    if comparison_path is not None and before:
        order = sorted(before)
        video.comparison_animation([before[i] for i in order], [after[i] for i in order], comparison_path)
        comparison = str(comparison_path)
    timings = {k: round(v, 3) for k, v in timer.totals.items()}
    timings["total"] = round(time.perf_counter() - started, 3)
    faded = sum(swapper.faded for swapper in swappers)
    notes = []
    if faded:
        notes.append(
            f"The face turns further than in the enrolled photos in {faded} of {swapped} frames, so the "
            f"swap fades out there: {ADVICE}."
        )
    people = [
        {"face": t.person + 1, "identity": t.identity, **counts}
        for t, counts in zip(opts.targets, per_target, strict=False)
    ]
    return ConvertReport(
        output=str(out),
        frames=written,
        swapped=swapped,
        skipped=skipped,
        track=opts.targets[0].person if opts.targets else opts.track,
        tracks=len(scan.tracks),
        fps=str(info.fps),
        has_audio=info.has_audio,
        bytes=out.stat().st_size,
        fitted=fitted,
        timings=timings,
        comparison=comparison,
        faded=faded,
        notes=notes,
        people=people,
    )


class _Encoder:
    """The writer thread: labels each frame in place and writes it to the encoder, in the order handed over.

    ``put`` blocks while ``depth`` batches wait (time counted as ``encode_wait``); an error in the thread re-raises
    from the next ``put`` or from ``finish``, which waits for the last frame. Leaving the ``with`` block without
    ``finish`` (an error elsewhere) stops the thread without writing the rest.
    """

    def __init__(
        self, writer: video.VideoWriter, renderer: label.LabelRenderer, timer: _Timer, sample_at: set[int],
        depth: int = 2,
    ) -> None:  # fmt: skip
        self.writer, self.renderer, self.timer, self.sample_at = writer, renderer, timer, sample_at
        self.after: dict[int, np.ndarray] = {}
        self.handed = 0  # frames handed over
        self.written = 0  # frames written to the encoder
        self._box: queue.Queue[list[tuple[int, np.ndarray]] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="encode", daemon=True)
        self._thread.start()

    def put(self, batch: list[_Pending], frames: list[np.ndarray]) -> None:
        self._raise()
        start = time.perf_counter()
        items = [(p.index, frame) for p, frame in zip(batch, frames, strict=True)]
        while True:
            try:
                self._box.put(items, timeout=0.5)
                break
            except queue.Full:
                self._raise()
        self.timer.add("encode_wait", start)
        self.handed += len(items)

    def finish(self) -> None:
        """Wait until every frame handed over is written; re-raise the thread's error, if any."""
        self._box.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while (items := self._box.get()) is not None:
                for index, frame in items:
                    start = time.perf_counter()
                    labelled = self.renderer.apply(frame, inplace=True)
                    if index in self.sample_at:
                        self.after[index] = _small(labelled)
                    self.timer.add("label", start)
                    start = time.perf_counter()
                    self.writer.write(labelled)
                    self.timer.add("encode", start)
                    self.written += 1
        except BaseException as exc:  # noqa: BLE001 - re-raised in the converting thread
            self._error = exc

    def __enter__(self) -> _Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            # An error in the converting thread: drop what waits and stop after the batch being written.
            with contextlib.suppress(queue.Empty):
                while True:
                    self._box.get_nowait()
            self._box.put(None)
            self._thread.join()


def _small(frame: np.ndarray, height: int = 240) -> np.ndarray:
    h, w = frame.shape[:2]
    width = max(2, int(round(w * height / h / 2)) * 2)
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
