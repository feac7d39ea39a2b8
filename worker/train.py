"""Training inside a job: the guild's bank from storage, trained with resume points saved to storage, saved back;
and the ``train`` job."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import TrainingError
from storage import BankConflict, SwapJob, TrainJob
from swap_engine import pipeline
from swap_engine.label import labelled_jpeg
from worker.bank import bank_from_storage, bank_to_storage
from worker.context import JobContext, Outcome, identity_faces, pack_state, restore_state, train_seconds

log = logging.getLogger("famswap.worker")

def train(ctx: JobContext, faces: dict[str, Path], identities: dict[int, int], state: dict[str, Any],
           keep: list[str]) -> Any:
    """Train the guild's bank on ``faces`` (identity key → faces) and save the stored identities' decoders."""
    from swap_engine.model import save_bank

    model = ctx.model_name()
    bank, version, _ = bank_from_storage(ctx, model, ctx.folder)
    bank_path = ctx.folder / "bank.pt"
    save_bank(bank_path, bank)
    seconds = train_seconds(ctx)
    checkpoint = ctx.folder / "train.ckpt"
    last_saved = [checkpoint.stat().st_mtime if checkpoint.exists() else 0.0]

    def on_progress(p: Any) -> None:
        total = p.losses.get("total")
        message = f"training: step {p.step}" + (f", loss {total:.3f}" if total is not None else "")
        preview = None if p.preview is None else labelled_jpeg(p.preview)
        done = p.step / plan.steps if plan.steps else p.elapsed_s / max(seconds, 1e-6)
        ctx.progress("train", done, message, preview, check=False)
        if checkpoint.exists() and checkpoint.stat().st_mtime > last_saved[0]:
            last_saved[0] = checkpoint.stat().st_mtime
            ctx.save_state({**state, "stage": "train", "train_step": p.step}, pack_state(ctx, keep + ["train.ckpt"]))

    from swap_engine.assets import hair_segmenter_path

    spec = ctx.job.payload
    plan = pipeline.TrainPlan(faces=faces, bank_path=bank_path, checkpoint=checkpoint, model=model,
                              device=ctx.device, seconds=seconds,
                              seed=spec.seed if isinstance(spec, SwapJob | TrainJob) else 0,
                              steps=spec.train_steps if isinstance(spec, SwapJob) else None,
                              hair_model=hair_segmenter_path(ctx.settings.models_path))
    first_step, started = int(state.get("train_step", 0) if checkpoint.exists() else 0), time.monotonic()
    result = train_with_oom_fallback(plan, on_progress, ctx.should_stop)
    if result.stopped in ("cancelled", "signal"):
        if not ctx.cancelled.is_set():  # a cancelled job never resumes: don't spend seconds uploading its checkpoint
            ctx.save_state({**state, "stage": "train", "train_step": result.step},
                           pack_state(ctx, keep + ["train.ckpt"]))
        ctx.check()
    from swap_engine.model import load_bank

    trained, _ = load_bank(bank_path)
    steps, seconds = result.step - first_step, time.monotonic() - started
    try:
        bank_to_storage(ctx, trained, version, identities, ctx.folder, {i: (steps, seconds) for i in identities})
    except BankConflict:
        log.warning("job %d: another worker saved the bank meanwhile; keeping this job's result only", ctx.job.id)
    state.update({"stage": "trained", "train_step": result.step})
    ctx.save_state(state, pack_state(ctx, keep + ["bank.pt"]))
    return result


def train_with_oom_fallback(plan: pipeline.TrainPlan, on_progress: Callable[[Any], None],
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


def run_train(ctx: JobContext) -> Outcome:
    """Fine-tune the bank for the job's identities (at least two faces sets are needed for a shared encoder)."""
    identities = [ctx.call(ctx.store.get_identity(ctx.job.guild_id, i)) for i in ctx.job.identity_ids]
    faces = {i.engine_id: identity_faces(ctx, i) for i in identities}
    state = restore_state(ctx)
    result = train(ctx, faces, {i.id: i.faceset_version for i in identities}, state, [])
    return Outcome(report={"kind": "train", "steps": result.step, "losses": result.losses})

