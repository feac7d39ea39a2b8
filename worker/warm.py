"""The ``warm`` job: train the guild's bank (the shared encoder and the decoders of its ready people) while the worker
has nothing else to do. It hands itself back at a checkpoint as soon as another job waits (``Preempted``), saving
what it trained to the guild's bank first so that job starts from it, and resumes later; it ends at a loss plateau,
at the guild's daily allowance (``FAMSWAP_WARM_MINUTES_PER_DAY``), or after the job's ``minutes`` / ``steps``."""

from __future__ import annotations

import logging
import time
from typing import Any

from storage import BankConflict, Identity, WarmJob
from swap_engine import pipeline
from worker.bank import bank_from_storage, bank_to_storage
from worker.context import Interrupted, JobContext, Outcome, identity_faces, pack_state, restore_state
from worker.train import train_with_oom_fallback

log = logging.getLogger("famswap.worker")

# Warming stops when the smoothed loss has not improved by 1 % (TrainConfig.plateau_min_delta) in this many steps:
# about 15-20 minutes of a 2-core CPU with three people (lite); warming goes on only once someone's face set changes.
WARM_PLATEAU_STEPS = 3000
CHECKPOINT_EVERY_S = 300.0  # a crashed worker loses at most this much warming (a hand-back saves at once)


class Preempted(Interrupted):
    """Another job waits: the warm job saved the bank and its checkpoint, and goes back to the queue."""


def allowance_seconds(ctx: JobContext, spec: WarmJob) -> float | None:
    """Seconds this run may train: the job's ``minutes`` less what it already trained, else what is left of the
    guild's daily allowance; None with ``steps`` (a count, not a time)."""
    if spec.steps is not None:
        return None
    if spec.minutes is not None:
        return spec.minutes * 60.0 - float(ctx.job.state.get("seconds_done", 0.0))
    used = ctx.call(ctx.store.warm_seconds_used(ctx.job.guild_id))
    return ctx.settings.warm_minutes_per_day * 60.0 - float(used)


def run_warm(ctx: JobContext) -> Outcome:
    """Warm the guild's bank until another job waits, a plateau, the allowance, or the job's own limit."""
    spec, guild = ctx.spec(WarmJob), ctx.job.guild_id
    people: list[Identity] = [ctx.call(ctx.store.get_identity(guild, i)) for i in ctx.job.identity_ids]
    people = [p for p in people if p.faceset is not None]
    if not people:
        return Outcome(report={"kind": "warm", "steps": 0, "stopped": "nobody to warm"})
    allowance = allowance_seconds(ctx, spec)
    if allowance is not None and allowance <= 0:
        log.info("job %d: the bank of server %d used its warming allowance for today", ctx.job.id, guild)
        return Outcome(report={"kind": "warm", "steps": 0, "stopped": "allowance"})
    # A message of its own at every start: what the bot and tests read is this run's, not the last run's.
    ctx.progress("warm", 0.0, f"warming the face bank ({len(people)} people)", check=False)
    state = restore_state(ctx)
    trained = {p.id: p.faceset_version for p in people}
    key = ",".join(f"{i}:{v}" for i, v in sorted(trained.items()))
    checkpoint = ctx.folder / "train.ckpt"
    model = ctx.model_name()
    bank, version, _ = bank_from_storage(ctx, model, ctx.folder)
    if checkpoint.exists() and (state.get("ckpt_base") != version or state.get("trained") != key):
        # The checkpoint (optimizer and all) continues the bank as it was stored when it was written. Once the bank
        # was saved since (this job's hand-back, a swap) or the people changed, warming goes on from the stored bank
        # with a fresh optimizer rather than overwrite it. A crashed worker's job resumes the checkpoint exactly.
        log.info("job %d: the stored bank moved on since the last checkpoint; warming goes on from it", ctx.job.id)
        checkpoint.unlink()
    from swap_engine.model import load_bank, save_bank

    bank_path = ctx.folder / "bank.pt"
    save_bank(bank_path, bank)
    faces = {p.engine_id: identity_faces(ctx, p) for p in people}
    first_step = int(state.get("ckpt_step") or 0) if checkpoint.exists() else 0
    steps_done = int(state.get("steps_done", 0))
    max_steps = None if spec.steps is None else first_step + max(0, spec.steps - steps_done)
    started_at, t0 = time.time(), time.monotonic()
    last_saved = [checkpoint.stat().st_mtime if checkpoint.exists() else 0.0]

    def resume_point(step: int, ckpt_base: int | None, ckpt_step: int | None) -> dict[str, Any]:
        """The job's state: steps and seconds warmed in all, and what its stored checkpoint continues from."""
        return {"trained": key, "ckpt_base": ckpt_base, "ckpt_step": ckpt_step,
                "steps_done": steps_done + step - first_step,
                "seconds_done": float(state.get("seconds_done", 0.0)) + time.monotonic() - t0}

    def should_stop() -> bool:
        over = allowance is not None and time.monotonic() - t0 >= allowance
        return over or ctx.preempted.is_set() or ctx.should_stop()

    def on_progress(p: Any) -> None:
        total = p.losses.get("total")
        if allowance is not None:
            done = (time.monotonic() - t0) / max(allowance, 1e-6)
        else:
            done = (p.step - first_step) / max(1, (max_steps or 1) - first_step)
        message = f"warming the face bank: step {p.step}" + (f", loss {total:.3f}" if total is not None else "")
        ctx.progress("warm", done, message, check=False)
        if checkpoint.exists() and checkpoint.stat().st_mtime > last_saved[0]:
            last_saved[0] = checkpoint.stat().st_mtime
            ctx.save_state(resume_point(p.step, version, p.step), pack_state(ctx, ["train.ckpt"]))

    from swap_engine.assets import hair_segmenter_path

    plan = pipeline.TrainPlan(faces=faces, bank_path=bank_path, checkpoint=checkpoint, model=model,
                              device=ctx.device, seconds=None, seed=spec.seed, steps=max_steps,
                              checkpoint_every_s=CHECKPOINT_EVERY_S,
                              plateau_steps=WARM_PLATEAU_STEPS if spec.steps is None else None, constant_lr=True,
                              previews=False, hair_model=hair_segmenter_path(ctx.settings.models_path))
    log.info("job %d: warming the bank of server %d (%d people) from step %d", ctx.job.id, guild, len(people),
             first_step)
    result = train_with_oom_fallback(plan, on_progress, should_stop)
    seconds = time.monotonic() - t0
    steps = result.step - result.resumed_from
    first_step = result.resumed_from  # exact (the state's figure is the progress report's after the checkpoint)
    if result.stopped == "cancelled":
        handed_back = ctx.preempted.is_set() or ctx.shutting_down.is_set()
        stopped = ("handed back" if handed_back else "cancelled" if ctx.cancelled.is_set()
                   else "minutes" if spec.minutes is not None else "allowance")
    else:
        stopped = result.stopped  # "plateau" or "steps"
    if ctx.cancelled.is_set() and not _still_there(ctx):
        ctx.check()  # erased (someone was forgotten) or taken over: keep nothing of it
    # What was trained is kept even when the job is cancelled (a newer warm job replaced it): it is the bank's.
    new_version: int | None = version
    if steps > 0:
        warmed, _ = load_bank(bank_path)
        try:
            new_version = bank_to_storage(ctx, warmed, version, trained, ctx.folder,
                                          {i: (steps, seconds) for i in trained}).version
        except BankConflict:
            new_version = None
            log.warning("job %d: another job saved the bank meanwhile; this warming is dropped", ctx.job.id)
    ctx.call(ctx.store.record_warm_run(guild, ctx.job.id, started_at=started_at, seconds=seconds, steps=steps,
                                       stopped=stopped, trained=trained))
    log.info("job %d: warmed %d steps in %.0f s (%s)", ctx.job.id, steps, seconds, stopped)
    if stopped == "handed back":
        # Quick: the bank is saved (the waiting job starts from it), the optimizer's checkpoint is not uploaded
        # (tens of MB: seconds on a busy CPU); warming resumes from the stored bank with a fresh optimizer.
        keep = new_version == version  # nothing trained: the stored checkpoint, if any, still continues the bank
        ctx.save_state(resume_point(result.step, state.get("ckpt_base") if keep else None,
                                    state.get("ckpt_step") if keep else None))
        if ctx.shutting_down.is_set():
            raise Interrupted()
        raise Preempted()
    ctx.check()
    return Outcome(report={"kind": "warm", "steps": steps_done + steps, "stopped": stopped,
                           "seconds": round(float(state.get("seconds_done", 0.0)) + seconds, 1),
                           "losses": result.losses})


def _still_there(ctx: JobContext) -> bool:
    """Whether this worker still holds the job (a cancel request keeps it; an erase or a takeover does not)."""
    from storage import LeaseLost

    try:
        ctx.call(ctx.store.heartbeat(ctx.job.id, ctx.worker_id, lease_seconds=60.0))
    except LeaseLost:
        return False
    return True
