"""Train a FaceBank: the shared encoder and the decoders of the identities given, under a time/step/plateau budget.

- ``make_trainset(crops, points, size, masks=None) -> TrainSet``: aligned face crops ``(N, H, H, 3)`` uint8 RGB,
  their 478 landmarks ``(N, 478, 2)`` in crop pixels and their face-without-hair masks ``(N, H, H)`` become crops,
  masks and eye/mouth loss weights at the model's output size (``ModelConfig.out_size``).
- The loss counts the person's own face pixels only: L1 and DSSIM are weighted by the mask (nothing outside it),
  and DSSIM compares the masked images, so no pixel outside the mask (hair, background, a hand) reaches the loss
  even through SSIM's window. The decoder's mask head learns that mask. No decoder learns to draw hair: outside
  the mask it is pulled, lightly, towards the face's own skin carried past its edge (``losses.skin_fill``), so
  what it draws there (the near cheek of a turned actor) is plain skin, not untrained noise.
- ``Trainer(bank, data, cfg, checkpoint_path).run(on_progress, should_stop) -> TrainResult``: every step takes
  ``cfg.batch`` faces of *each* identity in ``data``, augments them on the device (``augment.py``), encodes them
  in one pass and decodes each share with its own decoder. Decoders of identities not in ``data`` are frozen:
  never in the optimizer, never run, bit-identical afterwards (the shared encoder does change, by design).
- Checkpoints are bank files (``model.save_bank``; ``load_bank`` reads them) whose ``extra["trainer"]`` holds the
  optimizer, step, elapsed time, batch size, sampler and every RNG state, so a resumed run continues exactly
  (the same next loss as an uninterrupted run, on the same device and thread count). They are written atomically
  every ``checkpoint_every_s``, when ``request_checkpoint()`` is called, on stop, cancel, SIGTERM and at the end.
- ``swap_faces(bank, crops, identity)``: inference on crops of any square size, resized to and from the model size.

Defaults were measured on a 2-core CPU with ``benchmarks/quality_train.py`` (``lite``, two real people, held-out
reconstruction L1 and SSIM inside the face mask; runs compared at equal steps, then converted to equal time with
the measured throughput):

- lr 3e-4 (Adam, betas 0.5/0.999): 1e-3 learns faster for ~150 steps, then collapses; 1e-4 lags (600 steps:
  SSIM 0.64/0.73 vs 0.69/0.79 at 3e-4), and the classic 5e-5 can only be slower still in a short budget.
- batch 8 per identity: per sample it learns more than 16 (same 38k samples: SSIM 0.74/0.85 vs 0.69/0.79) and a
  CPU pushes as many samples per second through either.
- a cosine decay over the last quarter of the budget: same SSIM, 15 % lower L1 (sharper) than a constant lr.
"""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import TrainingError
from swap_engine.augment import AugmentConfig, augment_batch
from swap_engine.device import resolve_device
from swap_engine.losses import face_loss, mask_loss, pixel_weight, region_weights, skin_fill
from swap_engine.model import FaceBank, load_bank, save_bank

CHECKPOINT_FORMAT = "famswap-train/1"


# -----------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class TrainSet:
    """One identity's training faces at the model size S."""

    crops: np.ndarray  # (N, S, S, 3) uint8 RGB
    masks: np.ndarray  # (N, S, S) float32 in [0, 1]: the face without hair (segment.face_region)
    weights: np.ndarray  # (N, S, S) float32 >= 1: eye/mouth emphasis

    def __post_init__(self) -> None:
        n, s = len(self.crops), self.size
        if n == 0:
            raise ValueError("a TrainSet needs at least one face")
        if self.crops.shape != (n, s, s, 3) or self.crops.dtype != np.uint8:
            raise ValueError(f"crops must be (N, S, S, 3) uint8, got {self.crops.shape} {self.crops.dtype}")
        for name in ("masks", "weights"):
            arr = getattr(self, name)
            if arr.shape != (n, s, s) or arr.dtype != np.float32:
                raise ValueError(
                    f"{name} must be (N, S, S) float32 like the crops, got {arr.shape} {arr.dtype}"
                )

    @property
    def size(self) -> int:
        return int(self.crops.shape[1])

    def __len__(self) -> int:
        return len(self.crops)


def make_trainset(
    crops: np.ndarray,
    points: np.ndarray,
    size: int,
    *,
    masks: np.ndarray | None = None,
    eyes: float = 3.0,
    mouth: float = 2.0,
) -> TrainSet:
    """Resize aligned crops ``(N, H, H, 3)`` uint8 and their ``masks`` ``(N, H, H)`` to ``size`` and build the
    eye/mouth weights from ``points``.

    ``masks`` are the faces without hair (``segment.face_region``): what the loss counts and the learned mask is
    trained towards. None: the landmark hull (``face_region`` without a hair map), which still holds hair where
    it falls over the face.
    """
    import cv2

    from swap_engine.segment import face_region

    crops = np.asarray(crops)
    points = np.asarray(points, np.float32)
    if crops.ndim != 4 or crops.shape[1] != crops.shape[2] or crops.shape[3] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"crops must be (N, H, H, 3) uint8, got {crops.shape} {crops.dtype}")
    if points.shape[0] != crops.shape[0] or points.shape[2:] != (2,):
        raise ValueError(f"points must be (N, P, 2) like the crops, got {points.shape}")
    scale = size / crops.shape[1]
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    out = (
        np.stack([cv2.resize(c, (size, size), interpolation=interp) for c in crops]) if scale != 1 else crops
    )
    pts = points * scale
    if masks is None:
        masks = np.stack([face_region(p, size, None) for p in pts])
    else:
        masks = np.asarray(masks, np.float32)
        if masks.shape != crops.shape[:3]:
            raise ValueError(f"masks must be (N, H, H) like the crops, got {masks.shape}")
        if scale != 1:
            masks = np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA if scale < 1
                                         else cv2.INTER_LINEAR) for m in masks])  # fmt: skip
    weights = np.stack([region_weights(p, size, eyes=eyes, mouth=mouth) for p in pts])
    return TrainSet(np.ascontiguousarray(out), np.ascontiguousarray(masks, np.float32), weights)


class EpochSampler:
    """Per identity, walks a random permutation of its faces and draws a new one when it runs out."""

    def __init__(self, sizes: dict[str, int], gen: torch.Generator) -> None:
        self.sizes = sizes
        self.gen = gen
        self.perm = {k: torch.randperm(n, generator=gen) for k, n in sizes.items()}
        self.pos = dict.fromkeys(sizes, 0)

    def take(self, key: str, count: int) -> torch.Tensor:
        parts, need = [], count
        while need:
            if self.pos[key] == self.sizes[key]:
                self.perm[key] = torch.randperm(self.sizes[key], generator=self.gen)
                self.pos[key] = 0
            got = self.perm[key][self.pos[key] : self.pos[key] + need]
            self.pos[key] += len(got)
            need -= len(got)
            parts.append(got)
        return torch.cat(parts)  # (count,)

    def state_dict(self) -> dict[str, Any]:
        return {"perm": dict(self.perm), "pos": dict(self.pos)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perm = {k: v.clone() for k, v in state["perm"].items()}
        self.pos = {k: int(v) for k, v in state["pos"].items()}


# -----------------------------------------------------------------------------
# configuration and reports


@dataclass(frozen=True)
class TrainConfig:
    batch: int | None = None  # faces per identity per step; None: 8 on a CPU (measured best), 32 on a GPU
    lr: float = 3e-4  # Adam; the classic 5e-5 learns far slower in a short budget (see the module docstring)
    betas: tuple[float, float] = (0.5, 0.999)
    budget_seconds: float | None = 600.0  # wall clock, summed over resumed runs
    max_steps: int | None = None
    plateau_patience: int | None = 5000  # stop when the smoothed loss has not improved by plateau_min_delta
    plateau_min_delta: float = 0.01  # (relative) in this many steps
    # Constant lr, then a cosine down to lr * final_lr over the last part of the budget (seconds or steps,
    # whichever runs out first): settling at the end gives a sharper face in the same time. None: constant.
    decay_from: float | None = 0.75
    final_lr: float = 0.1
    # The random warp is on until this fraction of the budget, then off: the decoder ends on the exact faces
    # (DeepFaceLab's last phase). None: on throughout.
    warp_until: float | None = None
    checkpoint_every_s: float | None = 300.0
    progress_every_s: float = 2.0  # 0: a Progress every step
    preview_every_s: float | None = 60.0
    preview_faces: int = 6  # columns of the preview grid
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available
    amp: bool | None = None  # bf16 autocast; None: on for CUDA
    compile: bool = False  # torch.compile the encoder and decoders (minutes of start-up; long GPU runs only)
    channels_last: bool | None = None  # None: on for CUDA
    min_batch: int = 2  # halving the batch after CUDA out-of-memory stops here
    ssim_weight: float = 1.0
    l1_weight: float = 1.0
    mask_weight: float = 0.5  # learned mask vs the face-without-hair mask (models with learn_mask)
    background: float = 0.0  # loss weight left outside the face mask: none, so no decoder learns hair
    # Outside the mask the decoder is pulled (L1, this weight) towards the face's own skin carried past its edge
    # (losses.skin_fill): without it, what it draws there is untrained noise, which shows as stripes on the near
    # cheek of a turned actor, whose face reaches further out in the crop than the person's ever did. 0: off.
    skin_fill: float = 0.1
    skin_fill_sigma: float = 0.125  # of the output side
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class Progress:
    step: int
    losses: dict[str, float]  # per identity, "mask" and "total": means over the steps since the last Progress
    samples_per_s: float
    eta_s: float | None  # until the first budget (seconds or steps) runs out; None without either
    elapsed_s: float
    preview: np.ndarray | None = None  # (rows * S, cols * S, 3) uint8 RGB; see Trainer.preview
    batch: int = 0
    lr: float = 0.0


@dataclass(frozen=True)
class TrainResult:
    step: int
    elapsed_s: float
    stopped: str  # "budget" | "steps" | "plateau" | "cancelled" | "signal"
    losses: dict[str, float]  # the last Progress's
    history: list[tuple[int, float, float]]  # (step, elapsed_s, total loss) once per progress period
    batch: int
    checkpoint: Path
    samples_per_s: float
    resumed_from: int = 0  # the step this run started at (its checkpoint's; 0 for a fresh start)


def torch_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device, ``auto``/None resolved by ``swap_engine.device.resolve_device``."""
    return device if isinstance(device, torch.device) else torch.device(resolve_device(device))


def identity_loss(
    rgb: torch.Tensor,
    pred_mask: torch.Tensor | None,
    target: torch.Tensor,
    mask: torch.Tensor,
    emphasis: torch.Tensor,
    cfg: TrainConfig,
) -> list[torch.Tensor]:
    """``[face term, mask term]`` of one identity's share of a step: the decoder's ``rgb`` ``(B, 3, O, O)`` against
    ``target``, counted on the face-without-hair ``mask`` ``(B, 1, O, O)`` times the eye/mouth ``emphasis``, and the
    learned mask against ``mask`` (0 for models without one); outside the mask, ``cfg.skin_fill`` times the L1 to
    the face's skin carried past its edge. Target pixels where ``mask`` is 0 change none of it."""
    weight = pixel_weight(mask, emphasis, cfg.background)
    face = face_loss(
        rgb, target, weight, mask=mask if cfg.background == 0 else None,
        ssim_weight=cfg.ssim_weight, l1_weight=cfg.l1_weight,
    )  # fmt: skip
    if cfg.skin_fill > 0:
        fill = skin_fill(target, mask, cfg.skin_fill_sigma * target.shape[-1])
        outside = 1.0 - mask.float()
        diff = (rgb.float() - fill).abs().mean(1, keepdim=True)  # (B, 1, O, O)
        face = face + cfg.skin_fill * (diff * outside).sum() / outside.sum().clamp_min(1e-6)
    m = mask_loss(pred_mask, mask) if pred_mask is not None else face.new_zeros(())
    return [face, m]


# -----------------------------------------------------------------------------
# the trainer


class Trainer:
    """Trains ``bank``'s encoder and the decoders of ``data``'s identities; see the module docstring.

    ``cfg`` None means ``TrainConfig()``. With ``resume`` (the default) an existing ``checkpoint_path`` is loaded
    into ``bank`` and training continues from it; it must have been written for the same model, the same bank
    identities and the same trained identities (else ``TrainingError``; ``resume=False`` starts over).
    The bank is moved to the device and stays there.
    """

    def __init__(
        self,
        bank: FaceBank,
        data: dict[str, TrainSet],
        cfg: TrainConfig | None,
        checkpoint_path: str | os.PathLike[str],
        *,
        resume: bool = True,
    ) -> None:
        cfg = cfg or TrainConfig()
        if not data:
            raise ValueError("nothing to train: data is empty")
        for ident, ts in data.items():
            bank.decoder(ident)  # KeyError naming the bank's identities
            if ts.size != bank.cfg.out_size:
                raise ValueError(
                    f"{ident}: faces are {ts.size} px, the model draws {bank.cfg.out_size}: make_trainset"
                )
        self.bank, self.cfg, self.checkpoint_path = bank, cfg, Path(checkpoint_path)
        self.ids = sorted(data)
        self.device = torch_device(cfg.device)
        cuda = self.device.type == "cuda"
        self.amp = cfg.amp if cfg.amp is not None else cuda
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else cuda
        bank.to(self.device)
        if self.channels_last:
            bank.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks it

        # Frozen decoders get no gradient and stay out of the optimizer: bit-identical afterwards.
        bank.requires_grad_(False)
        trained = [bank.encoder] + [bank.decoder(i) for i in self.ids]
        for module in trained:
            module.requires_grad_(True)
        params = [p for m in trained for p in m.parameters()]
        fused = {"fused": True} if cuda else {"foreach": True}
        self.opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, **fused)
        self._encode: Callable[[torch.Tensor], torch.Tensor] = bank.encoder
        self._decoders: dict[str, Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]] = {i: bank.decoder(i) for i in self.ids}
        if cfg.compile:
            self._encode = torch.compile(bank.encoder)
            self._decoders = {i: torch.compile(d) for i, d in self._decoders.items()}

        # Whole face sets live on the device as uint8 (64 px: 12 KB a face): no loader, no copies per step.
        self._images = {i: torch.from_numpy(data[i].crops).to(self.device) for i in self.ids}  # (N, S, S, 3)
        self._maps = {
            i: torch.from_numpy(np.stack([data[i].masks, data[i].weights], 1)).to(self.device)
            for i in self.ids
        }  # (N, 2, S, S)
        self._preview_idx = {
            i: torch.linspace(0, len(data[i]) - 1, min(cfg.preview_faces, len(data[i]))).round().long()
            for i in self.ids
        }

        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.sampler = EpochSampler({i: len(data[i]) for i in self.ids}, self.gen)
        self.step = 0
        self.elapsed = 0.0
        self.batch = cfg.batch or (32 if cuda else 8)
        self.smooth_loss: float | None = None
        self.best_loss = math.inf
        self.best_step = 0
        self.history: list[tuple[int, float, float]] = []
        self._stop_reason: str | None = None
        self._in_step = False
        self._want_checkpoint = threading.Event()
        if resume and self.checkpoint_path.exists():
            self._load_checkpoint()
        else:
            _seed_everything(cfg.seed)

    # -- control from other threads / signal handlers ---------------------------------------------

    def request_stop(self, reason: str = "signal") -> None:
        """Stop after the current step, checkpoint, and return ``stopped=reason`` (safe in a signal handler)."""
        self._stop_reason = reason

    def request_checkpoint(self) -> None:
        """Write a checkpoint after the current step (safe in a signal handler or another thread)."""
        self._want_checkpoint.set()

    # -- one step --------------------------------------------------------------------------------

    def _train_step(self, batch: int) -> dict[str, float]:
        k, cfg = len(self.ids), self.cfg
        idx = [self.sampler.take(i, batch).to(self.device) for i in self.ids]
        faces = torch.cat(
            [self._images[i][j] for i, j in zip(self.ids, idx, strict=True)]
        )  # (kB, S, S, 3) uint8
        maps = torch.cat([self._maps[i][j] for i, j in zip(self.ids, idx, strict=True)])  # (kB, 2, S, S)
        faces = faces.permute(0, 3, 1, 2).float().div_(255)  # (kB, 3, O, O), O = the decoder's output size
        augment = cfg.augment
        if cfg.warp_until is not None and self.budget_done() > cfg.warp_until:
            augment = replace(augment, warp=0.0)
        warped, target, warped_maps = augment_batch(faces, maps, augment, self.gen)
        assert warped_maps is not None  # maps in, maps out
        warped = self._to_input(warped)  # (kB, 3, S, S)
        mask, emphasis = warped_maps[:, :1], warped_maps[:, 1:]  # (kB, 1, O, O) each
        if self.channels_last:
            warped = warped.contiguous(memory_format=torch.channels_last)

        terms = []
        with self._autocast():
            z = self._encode(warped)  # (kB, C, s, s)
            for n, ident in enumerate(self.ids):
                part = slice(n * batch, (n + 1) * batch)
                rgb, pred_mask = self._decoders[ident](z[part])
                terms += identity_loss(rgb, pred_mask, target[part], mask[part], emphasis[part], cfg)
        terms_t = torch.stack(terms).view(k, 2)  # (identities, [face, mask])
        total = terms_t[:, 0].sum() + cfg.mask_weight * terms_t[:, 1].sum()
        self.opt.zero_grad(set_to_none=True)
        total.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
        values = terms_t.detach().float().cpu()  # the step's one sync
        if not torch.isfinite(values).all():
            raise TrainingError(
                f"training diverged at step {self.step + 1} (loss is not a number)",
                hint="Lower the learning rate or restart from the last checkpoint.",
            )
        lr = self.lr_now()
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        self.step += 1
        out = {ident: float(values[n, 0]) for n, ident in enumerate(self.ids)}
        if self.bank.cfg.learn_mask:
            out["mask"] = float(values[:, 1].mean())
        out["total"] = float(values[:, 0].sum() + cfg.mask_weight * values[:, 1].sum())
        return out

    def _to_input(self, faces: torch.Tensor) -> torch.Tensor:
        """Faces at the decoder's output size ``(B, 3, O, O)`` → the encoder's input size ``(B, 3, S, S)``."""
        size = self.bank.cfg.size
        if faces.shape[-1] == size:
            return faces
        return F.interpolate(faces, size=(size, size), mode="bilinear", antialias=True, align_corners=False)

    def _step_with_oom_retry(self) -> dict[str, float]:
        while True:
            try:
                return self._train_step(self.batch)
            except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError in torch >= 2.5, same class
                self.opt.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.batch // 2 < self.cfg.min_batch:
                    raise TrainingError(
                        f"the GPU ran out of memory even with {self.batch} faces per identity",
                        hint="Use a smaller model (FAMSWAP_MODEL=lite), free the GPU, or train on the CPU.",
                    ) from None
                self.batch //= 2

    def budget_done(self) -> float:
        """How much of the budget (seconds or steps, whichever runs out first) is spent: 0 at the start, 1 at the end."""
        cfg, done = self.cfg, 0.0
        if cfg.budget_seconds:
            done = self.elapsed / cfg.budget_seconds
        if cfg.max_steps:
            done = max(done, self.step / cfg.max_steps)
        return done

    def lr_now(self) -> float:
        """The learning rate for the next step (see ``TrainConfig.decay_from``)."""
        cfg = self.cfg
        done = self.budget_done()
        if cfg.decay_from is None or done <= cfg.decay_from:
            return cfg.lr
        t = min(1.0, (done - cfg.decay_from) / max(1e-9, 1.0 - cfg.decay_from))
        return cfg.lr * (cfg.final_lr + (1.0 - cfg.final_lr) * 0.5 * (1.0 + math.cos(math.pi * t)))

    def _autocast(self) -> AbstractContextManager[Any]:
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # -- the loop --------------------------------------------------------------------------------

    def run(
        self,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        *,
        handle_sigterm: bool = False,
    ) -> TrainResult:
        """Train until a budget runs out, ``should_stop()`` is true, or ``request_stop`` is called.

        ``should_stop`` is polled before every step (keep it cheap). With ``handle_sigterm`` (main thread only),
        SIGTERM checkpoints and returns ``stopped="signal"``; the previous handler is restored afterwards.
        """
        cfg = self.cfg
        old_handler = None
        if handle_sigterm and threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGTERM, lambda *_: self.request_stop("signal"))
        self.bank.train()
        self._in_step = False
        start, start_elapsed = time.perf_counter(), self.elapsed
        last_ckpt = last_progress = last_preview = start
        period: dict[str, float] = {}
        period_steps, period_samples = 0, 0
        step_time: float | None = None
        last: Progress | None = None
        saved_step = first_step = self.step
        stopped = ""
        try:
            while True:
                now = time.perf_counter()
                self.elapsed = start_elapsed + (now - start)
                stopped = self._should_end(should_stop, step_time)
                if stopped:
                    break
                t0 = time.perf_counter()
                self._in_step = True
                losses = self._step_with_oom_retry()
                self._in_step = False
                t1 = time.perf_counter()
                step_time = t1 - t0 if step_time is None else 0.8 * step_time + 0.2 * (t1 - t0)
                self.elapsed = start_elapsed + (t1 - start)
                self._track_plateau(losses["total"])
                for key, value in losses.items():
                    period[key] = period.get(key, 0.0) + value
                period_steps += 1
                period_samples += self.batch * len(self.ids)

                if t1 - last_progress >= cfg.progress_every_s:
                    preview = None
                    if cfg.preview_every_s is not None and t1 - last_preview >= cfg.preview_every_s:
                        preview, last_preview = self.preview(), t1
                    last = self._progress(
                        period, period_steps, period_samples, t1 - last_progress, step_time, preview
                    )
                    last_progress, period, period_steps, period_samples = t1, {}, 0, 0
                    if on_progress is not None:
                        on_progress(last)
                every = cfg.checkpoint_every_s
                if self._want_checkpoint.is_set() or (every is not None and t1 - last_ckpt >= every):
                    self._want_checkpoint.clear()
                    self.save_checkpoint()
                    last_ckpt, saved_step = time.perf_counter(), self.step
        except BaseException:
            # A callback raised between steps (a cancelled job, Ctrl-C): the state is consistent, keep it.
            if self.step > saved_step and not self._in_step:
                self.save_checkpoint()
            raise
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGTERM, old_handler)

        if period_steps or last is None:
            dt = time.perf_counter() - last_progress
            preview = self.preview() if cfg.preview_every_s is not None else None
            last = self._progress(period, period_steps, period_samples, dt, step_time, preview)
            if on_progress is not None:
                on_progress(last)
        self.save_checkpoint()
        return TrainResult(
            step=self.step,
            elapsed_s=self.elapsed,
            stopped=stopped,
            losses=last.losses,
            history=list(self.history),
            batch=self.batch,
            checkpoint=self.checkpoint_path,
            samples_per_s=last.samples_per_s,
            resumed_from=first_step,
        )

    def _should_end(self, should_stop: Callable[[], bool] | None, step_time: float | None) -> str:
        cfg = self.cfg
        if self._stop_reason:
            reason, self._stop_reason = self._stop_reason, None  # consumed: a later run() trains again
            return reason
        if should_stop is not None and should_stop():
            return "cancelled"
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            return "steps"
        # Stop *before* a step that would end past the budget, so a budget is kept to about one step.
        if cfg.budget_seconds is not None and self.elapsed + (step_time or 0.0) > cfg.budget_seconds:
            return "budget"
        if cfg.plateau_patience is not None and self.step - self.best_step >= cfg.plateau_patience:
            return "plateau"
        return ""

    def _track_plateau(self, total: float) -> None:
        self.smooth_loss = total if self.smooth_loss is None else 0.98 * self.smooth_loss + 0.02 * total
        if self.smooth_loss < self.best_loss * (1 - self.cfg.plateau_min_delta):
            self.best_loss, self.best_step = self.smooth_loss, self.step

    def _progress(
        self,
        sums: dict[str, float],
        steps: int,
        samples: int,
        seconds: float,
        step_time: float | None,
        preview: np.ndarray | None,
    ) -> Progress:
        losses = {k: v / max(steps, 1) for k, v in sums.items()}
        if steps:
            self.history.append((self.step, round(self.elapsed, 3), losses["total"]))
        etas = []
        if self.cfg.budget_seconds is not None:
            etas.append(max(0.0, self.cfg.budget_seconds - self.elapsed))
        if self.cfg.max_steps is not None and step_time is not None:
            etas.append(max(0, self.cfg.max_steps - self.step) * step_time)
        return Progress(
            step=self.step,
            losses=losses,
            samples_per_s=samples / seconds if seconds > 0 else 0.0,
            eta_s=min(etas) if etas else None,
            elapsed_s=self.elapsed,
            preview=preview,
            batch=self.batch,
            lr=self.lr_now(),
        )

    # -- preview ---------------------------------------------------------------------------------

    @torch.no_grad()
    def preview(self) -> np.ndarray:
        """A uint8 RGB grid on fixed, unaugmented faces; columns are faces, rows (A, B the first two identities):

        A, A->A, A->B, B, B->B, B->A  (the source row, then its reconstruction and its swap). With one identity
        trained: A, A->A.
        """
        ids = self.ids[:2]
        rows = []
        for n, src in enumerate(ids):
            faces = (
                self._images[src][self._preview_idx[src]].permute(0, 3, 1, 2).float() / 255
            )  # (F, 3, S, S)
            x = self._to_input(faces)
            x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
            with self._autocast():
                z = self.bank.encoder(x)
                outs = [self.bank.decoder(dst)(z)[0].float() for dst in (ids[n:] + ids[:n])]
            rows += [faces] + outs
        width = max(len(r) for r in rows)
        size = self.bank.cfg.out_size
        grid = torch.zeros(len(rows), width, 3, size, size, device=self.device)
        for r, row in enumerate(rows):
            grid[r, : len(row)] = row
        grid = grid.permute(0, 3, 1, 4, 2).reshape(len(rows) * size, width * size, 3)  # (R*S, C*S, 3)
        return (grid.clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()

    # -- checkpoints -----------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write the bank and the whole training state atomically to ``checkpoint_path``."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "identities": self.ids,
            "step": self.step,
            "elapsed": self.elapsed,
            "batch": self.batch,
            "optimizer": self.opt.state_dict(),
            "sampler": self.sampler.state_dict(),
            "generator": self.gen.get_state(),
            "rng": _rng_state(),
            "smooth_loss": self.smooth_loss,
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "history": list(self.history),
            "config": _plain(asdict(self.cfg)),
        }
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        save_bank(self.checkpoint_path, self.bank, {"trainer": state})
        return self.checkpoint_path

    def _load_checkpoint(self) -> None:
        path = self.checkpoint_path
        try:
            saved, extra = load_bank(path, map_location=self.device)
        except Exception as err:
            raise TrainingError(
                f"cannot read the training checkpoint {path}: {err}", hint="Delete it to start over."
            ) from err
        state = extra.get("trainer")
        if not state or state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(
                f"{path} is a bank, not a training checkpoint", hint="Delete it to start over."
            )
        if saved.cfg != self.bank.cfg or state["identities"] != self.ids:
            raise TrainingError(
                f"the checkpoint {path} was written for {saved.cfg.name} training {state['identities']}, "
                f"not {self.bank.cfg.name} training {self.ids}",
                hint="Delete it (or pass resume=False) to start over.",
            )
        if sorted(saved.identities) != sorted(self.bank.identities):
            raise TrainingError(
                f"the checkpoint {path} holds identities {saved.identities}, the bank {self.bank.identities}",
                hint="Delete it (or pass resume=False) to start over.",
            )
        self.bank.load_state_dict(saved.state_dict())
        self.opt.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.gen.set_state(state["generator"])
        _set_rng_state(state["rng"])
        self.step, self.elapsed, self.batch = int(state["step"]), float(state["elapsed"]), int(state["batch"])
        self.smooth_loss, self.best_loss, self.best_step = (
            state["smooth_loss"],
            state["best_loss"],
            state["best_step"],
        )
        self.history = [tuple(h) for h in state["history"]]


# -----------------------------------------------------------------------------
# helpers


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": npst["key"].cpu().numpy().astype(np.uint32), "pos": npst["pos"]},
            "has_gauss": npst["has_gauss"],
            "gauss": npst["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _plain(value: Any) -> Any:
    """Config dicts with only what ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -----------------------------------------------------------------------------
# inference


@torch.no_grad()
def swap_faces(
    bank: FaceBank,
    crops: np.ndarray,
    identity: str,
    *,
    device: str | torch.device | None = None,
    batch: int = 64,
    as_drawn: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw ``identity``'s face over each crop ``(N, H, H, 3)`` uint8 RGB (any H; resized to and from the model).

    Returns the faces ``(N, O, O, 3)`` uint8, O = H (``as_drawn``: the decoder's own output size, not resized back),
    and, for models that learn one, the masks ``(N, O, O)`` float32 in [0, 1] (else None). ``device`` None uses the
    bank's; the bank is moved there and put in eval mode.
    """
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1] != crops.shape[2] or crops.shape[3] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"crops must be (N, H, H, 3) uint8, got {crops.shape} {crops.dtype}")
    bank.decoder(identity)
    dev = torch_device(device) if device is not None else next(bank.parameters()).device
    bank.to(dev).eval()
    n, side, size, out_size = len(crops), crops.shape[1], bank.cfg.size, bank.cfg.out_size
    drawn = out_size if as_drawn else side
    out = np.empty((n, drawn, drawn, 3), np.uint8)
    masks = np.empty((n, drawn, drawn), np.float32) if bank.cfg.learn_mask else None
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    for lo in range(0, n, batch):
        x = torch.from_numpy(crops[lo : lo + batch]).to(dev).permute(0, 3, 1, 2).float() / 255  # (b, 3, H, H)
        if side != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        with amp:
            rgb, mask = bank(x, identity)  # (b, 3, O, O), (b, 1, O, O) | None
        rgb = rgb.float()
        if drawn != out_size:
            rgb = F.interpolate(
                rgb, size=(drawn, drawn), mode="bicubic", antialias=drawn < out_size, align_corners=False
            )
        out[lo : lo + batch] = (rgb.clamp(0, 1) * 255 + 0.5).byte().permute(0, 2, 3, 1).cpu().numpy()
        if masks is not None and mask is not None:
            mask = mask.float()
            if drawn != out_size:
                mask = F.interpolate(mask, size=(drawn, drawn), mode="bilinear", align_corners=False)
            masks[lo : lo + batch] = mask[:, 0].clamp(0, 1).cpu().numpy()
    return out, masks


@torch.no_grad()
def reconstruction_losses(
    bank: FaceBank,
    faces: TrainSet,
    *,
    candidates: list[str] | None = None,
    device: str | torch.device | None = None,
    max_faces: int = 32,
) -> dict[str, float]:
    """How well each decoder already draws ``faces``: identity → the training loss's face term (masked L1 + DSSIM,
    lower is closer) of up to ``max_faces`` of them, spread evenly, unaugmented, encoded and decoded by that identity.

    ``candidates`` None: every decoder in the bank. This is the bank's own reconstruction, not a face-recognition
    embedding: it picks the decoder whose drawing needs the least change to draw these faces.
    """
    names = bank.identities if candidates is None else candidates
    if not names:
        return {}
    dev = torch_device(device) if device is not None else next(bank.parameters()).device
    was_training = bank.training
    bank.to(dev).eval()
    idx = np.linspace(0, len(faces) - 1, min(max_faces, len(faces))).round().astype(int)
    target = torch.from_numpy(faces.crops[idx]).to(dev).permute(0, 3, 1, 2).float() / 255  # (F, 3, O, O)
    mask = torch.from_numpy(faces.masks[idx]).to(dev)[:, None]  # (F, 1, O, O)
    size = bank.cfg.size
    x = target if target.shape[-1] == size else F.interpolate(
        target, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    z = bank.encoder(x)
    out = {}
    for name in names:
        rgb, _ = bank.decoder(name)(z)
        out[name] = float(face_loss(rgb, target, mask, mask=mask))
    bank.train(was_training)
    return out


def closest_decoder(bank: FaceBank, faces: TrainSet, *, device: str | torch.device | None = None) -> str | None:
    """The bank's identity whose decoder reconstructs ``faces`` best (``reconstruction_losses``); None: no decoder."""
    losses = reconstruction_losses(bank, faces, device=device)
    return min(losses, key=lambda k: (losses[k], k)) if losses else None


__all__ = [
    "reconstruction_losses",
    "closest_decoder",
    "TrainSet",
    "make_trainset",
    "TrainConfig",
    "Progress",
    "TrainResult",
    "Trainer",
    "swap_faces",
    "torch_device",
    "identity_loss",
]
