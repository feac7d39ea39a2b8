"""The ``swap`` job (scan → choose → actor → train → convert, resuming after the last finished stage) and the
``refit`` of a finished swap to a smaller size."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path

from common.errors import FamswapError, NoFaceFound, NotAllowed
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

# Several faces compete when the second person has at least this share of the main one's screen time × size.
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


def assign_faces(scores: list[float], asked: list[int | None], *, ask: bool) -> tuple[list[int], int | None]:
    """Which person of the clip (index into people ranked by ``scores``, screen time × size, best first) each
    identity of a swap replaces, from the faces ``asked`` (0-based, None: not chosen). An identity without a face
    takes the best-ranked person nobody else has, unless ``ask`` and that is a guess: several identities to place
    among several people, or one whose runner-up competes (``COMPETING_TRACK_SHARE``). Returns the faces, or the
    position of the first identity to ask about (then the faces are incomplete)."""
    people = len(scores)
    for face in asked:
        if face is not None and not 0 <= face < people:
            raise NoFaceFound(f"The clip shows {people} person(s) large enough to swap; there is no face {face + 1}.",
                              hint="Pick a number from the clip's contact sheet.")
    chosen = [f for f in asked if f is not None]
    if len(chosen) != len(set(chosen)):
        raise NotAllowed("The same face of the clip was chosen for two people.", hint="Give each person their own face.")
    free = [i for i in range(people) if i not in chosen]
    if sum(f is None for f in asked) > len(free):
        raise NoFaceFound(f"The clip shows {people} person(s) large enough to swap, fewer than the {len(asked)} asked for.",
                          hint="Swap fewer people, or choose a clip where each of them has a face to take.")
    faces: list[int] = []
    for position, face in enumerate(asked):
        if face is None:
            unplaced = sum(f is None for f in asked[position:])
            competing = len(free) > 1 and scores[free[1]] >= COMPETING_TRACK_SHARE * scores[free[0]]
            if ask and len(free) > 1 and (unplaced > 1 or competing):
                return faces, position
            face = free.pop(0)
        faces.append(face)
    return faces, None


def _run_swap(ctx: JobContext, stored: str) -> Outcome:
    from swap_engine.convert import ConvertOptions, SwapTarget, convert_clip
    from swap_engine.model import load_bank

    job, spec = ctx.job, ctx.spec(SwapJob)
    cast = spec.cast()
    if cast[0].identity_id is None:  # payloads typed by migration 0003 name the identity on the job row only
        cast[0] = replace(cast[0], identity_id=job.identity_ids[0])
    identities: list[Identity] = []
    for c in cast:
        assert c.identity_id is not None  # the first was filled in above; the others are ints
        identities.append(ctx.call(ctx.store.get_identity(job.guild_id, c.identity_id)))
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
    if not scan.people:
        raise NoFaceFound(f"No face in {stored} is large enough to swap.",
                          hint="Try a clip where the face is closer to the camera.")

    faces, question = assign_faces([p.score for p in scan.people], [c.face for c in cast], ask=spec.ask)
    if question is not None:
        who = identities[question].display_name
        # Numbered from 1, like the bot's "Face N" buttons and /swap face:N.
        sheet = pipeline.write_contact_sheet(clip, scan, ctx.folder / "people.jpg", first_number=1)
        # The bot's protocol: the clip is kept as the video (the job's input is released when it ends), so the
        # follow-up swap with the chosen face can be queued from it; only until the question expires (the bot
        # deletes it as soon as a face is chosen).
        return Outcome(video=clip, comparison=sheet, expires_in=ctx.store.limits.choice_seconds, report={
            "kind": "swap", "needs_choice": True, "tracks": len(scan.tracks), "faces": len(scan.people),
            "choose_for": who, "taken": [f + 1 for f in faces],
            "message": f"I found {len(scan.people)} people in this clip. Which one should become {who}? "
                       "Pick a number.",
        })  # fmt: skip

    from swap_engine.assets import hair_segmenter_path

    hair = hair_segmenter_path(ctx.settings.models_path)
    training: dict[str, Path] = {}
    for identity in identities:
        training.setdefault(identity.engine_id, identity_faces(ctx, identity))
    for position, face in enumerate(faces):
        actor_path = ctx.folder / f"actor-p{face}.npz"
        person = scan.person(face)
        if not actor_path.is_file():
            ctx.progress("actor", 0.2, f"collecting face {face + 1}'s views ({len(person.faces)} frames, "
                                       f"{len(person.tracks)} shot(s))")
            pipeline.extract_faces(clip, person, actor_path, hair_model=hair)
        # One actor decoder per chosen person (the first keeps the key single-person swaps always had).
        training[f"actor-{job.id}" if position == 0 else f"actor-{job.id}-{position}"] = actor_path

    if not (ctx.folder / "bank.pt").is_file() or state.get("stage") != "trained":
        train(ctx, training, {i.id: i.faceset_version for i in identities}, state, ["scan.npz"])
    ctx.check()
    bank, _ = load_bank(ctx.folder / "bank.pt")
    out = ctx.folder / "swap.mp4"
    max_bytes = spec.max_bytes or ctx.settings.output_max_bytes
    targets = tuple(
        SwapTarget(person=face, identity=identity.engine_id,
                   pose_range=pipeline.pose_range(training[identity.engine_id]),
                   faceset=training[identity.engine_id])
        for face, identity in zip(faces, identities, strict=True)
    )  # fmt: skip
    opts = ConvertOptions(targets=targets, device=ctx.device, max_bytes=max_bytes, hair_model=hair)
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
    for entry, identity in zip(data["people"], identities, strict=True):
        entry["identity"] = identity.display_name  # the engine's decoder key means nothing to a user
    data.update({"kind": "swap", "identity": " and ".join(i.display_name for i in identities), "track": faces[0],
                 "tracks": len(scan.tracks), "faces": len(scan.people), "model": bank.cfg.name,
                 "clip_seconds": info.duration, "train_step": state.get("train_step")})
    return Outcome(video=out, comparison=comparison, report=data)
