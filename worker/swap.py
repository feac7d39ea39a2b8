"""The ``swap`` job (scan → choose → actor → train → convert, resuming after the last finished stage) and the
``refit`` of a finished swap to a smaller size."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from common.errors import FamswapError, NoFaceFound
from storage import Identity, RefitJob, SwapJob
from swap_engine import pipeline
from swap_engine.label import mark_gif_synthetic
from worker.context import (
    JobContext,
    Outcome,
    check_video,
    identity_faces,
    named,
    pack_state,
    restore_state,
    safe_suffix,
)
from worker.train import train

log = logging.getLogger("famswap.worker")

# Several faces compete when the second track has at least this share of the main one's screen time × size.
COMPETING_TRACK_SHARE = 0.5


def run_refit(ctx: JobContext) -> Outcome:
    """Re-encode a finished swap (the job's input) to at most ``max_bytes``: the bot asks for this when Discord
    refuses a video as too large for the server. The result keeps its label (it is in the pixels) and metadata."""
    from swap_engine.label import SYNTHETIC_METADATA
    from swap_engine.video import fit_to_size

    job, spec = ctx.job, ctx.spec(RefitJob)
    if job.input is None:
        raise NoFaceFound("There is no video to make smaller.", hint="Run the swap again.")
    max_bytes = spec.max_bytes
    ctx.progress("convert", 0.1, "making the video smaller for this server")
    (ctx.folder / "input").mkdir(exist_ok=True)
    src = ctx.call(ctx.store.decrypt_to(job.input, ctx.folder / "input" / "swap.mp4"))
    out = ctx.folder / "smaller.mp4"
    fit = fit_to_size(src, out, max_bytes, metadata=SYNTHETIC_METADATA)
    return Outcome(video=out, report={"kind": "refit", "refit_of": spec.refit_of,
                                      "bytes": fit.size_bytes, "width": fit.width, "height": fit.height})


def run_swap(ctx: JobContext) -> Outcome:
    """scan → (choose) → actor → train → convert, resuming after the last finished stage."""
    shown = ctx.spec(SwapJob).clip_name
    stored = f"clip{safe_suffix(shown) or '.mp4'}"
    try:
        return _run_swap(ctx, stored)
    except FamswapError as exc:  # messages name the clip as the user sent it
        exc.message = named(exc.message, stored, shown)
        raise


def _run_swap(ctx: JobContext, stored: str) -> Outcome:
    from swap_engine.convert import ConvertOptions, convert_clip
    from swap_engine.model import load_bank

    job, spec = ctx.job, ctx.spec(SwapJob)
    (identity_id,) = job.identity_ids
    identity: Identity = ctx.call(ctx.store.get_identity(job.guild_id, identity_id))
    if job.input is None:
        raise NoFaceFound("This swap has no clip attached.", hint="Send the clip again with /swap.")
    state = restore_state(ctx)
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

        ctx.progress("scan", 0.0, "finding faces in the clip")
        scan = pipeline.scan_video(
            clip, landmarker_path(ctx.settings.models_path), max_frames=ctx.settings.max_clip_frames,
            on_progress=lambda d, t, m: ctx.progress("scan", d / max(t, 1), m),
        )  # fmt: skip
        pipeline.save_scan(scan, scan_path)
        state["stage"] = "scan"
        ctx.save_state(state, pack_state(ctx, ["scan.npz"]))
    scan = pipeline.load_scan(scan_path)

    track = spec.track
    if track is None:
        if spec.ask and len(scan.tracks) > 1 and scan.tracks[1].score >= COMPETING_TRACK_SHARE * scan.tracks[0].score:
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
        ctx.progress("actor", 0.2, f"collecting the actor's face ({len(chosen.faces)} frames)")
        from swap_engine.assets import hair_segmenter_path

        pipeline.extract_actor(clip, scan, int(track), actor_path,
                               hair_model=hair_segmenter_path(ctx.settings.models_path))

    person = identity.engine_id
    if not (ctx.folder / "bank.pt").is_file() or state.get("stage") != "trained":
        person_faces = identity_faces(ctx, identity)
        actor = f"actor-{job.id}"
        train(ctx, {person: person_faces, actor: actor_path}, {identity.id: identity.faceset_version},
               state, ["scan.npz"])
    ctx.check()
    bank, _ = load_bank(ctx.folder / "bank.pt")
    out = ctx.folder / "swap.mp4"
    max_bytes = spec.max_bytes or ctx.settings.output_max_bytes
    from swap_engine.assets import hair_segmenter_path

    opts = ConvertOptions(identity=person, track=int(track), device=ctx.device, max_bytes=max_bytes,
                          hair_model=hair_segmenter_path(ctx.settings.models_path),
                          pose_range=pipeline.pose_range(identity_faces(ctx, identity)))
    report = convert_clip(
        clip, bank, scan, out, opts,
        on_progress=lambda d, t: ctx.progress("convert", d / max(t, 1), f"swapping frame {d} of {t}")
        if d % 10 == 0 or d == t else ctx.check(),
        comparison_path=ctx.folder / "compare.gif",
    )  # fmt: skip
    comparison = Path(report.comparison) if report.comparison else None
    if comparison is not None and comparison.suffix.lower() == ".gif":
        mark_gif_synthetic(comparison)
    data = asdict(report)
    data.update({"kind": "swap", "identity": identity.display_name, "track": int(track), "tracks": len(scan.tracks),
                 "model": bank.cfg.name, "clip_seconds": info.duration, "train_step": state.get("train_step")})
    return Outcome(video=out, comparison=comparison, report=data)

