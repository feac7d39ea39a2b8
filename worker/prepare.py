"""The ``prepare`` job: an identity's uploads → its face set of one person, with a verdict per upload and a thumbnail
grid. When the new uploads show someone else than the person enrolled before, nothing is stored: the job ends with
a question (``report["needs_confirm"]``, the new uploads left pending) that the bot asks with buttons and the command
line with ``--add-anyway``; a ``PrepareJob(add_anyway=True)`` then adds them."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from common.errors import FamswapError, MediaError, NoFaceFound
from storage import Identity, IdentityStatus, PrepareJob, Upload, UploadKind, UploadStatus
from swap_engine.faceset import (
    OTHER_PERSON,
    FaceSetReport,
    OtherPerson,
    merge_facesets,
    pack_faceset,
    thumbnail_grid,
)
from worker.context import JobContext, Outcome, check_video, identity_faces, named, safe_suffix

log = logging.getLogger("famswap.worker")


def run_prepare(ctx: JobContext) -> Outcome:
    """Decrypt the identity's uploads, build the face set, record each upload's verdict, store set + thumbnails."""
    from swap_engine.assets import hair_segmenter_path, landmarker_path
    from swap_engine.embed import SAME_PERSON, FaceEmbedder, distances
    from swap_engine.faceset import build_faceset, faceset_reference

    (identity_id,) = ctx.job.identity_ids
    add_anyway = isinstance(ctx.job.payload, PrepareJob) and ctx.job.payload.add_anyway
    store, guild = ctx.store, ctx.job.guild_id
    identity: Identity = ctx.call(store.get_identity(guild, identity_id))
    usable = [u for u in ctx.call(store.list_uploads(guild, identity_id)) if u.status != UploadStatus.REJECTED]
    # Uploads already judged may have had their raw file deleted (retention): their faces live on in the current
    # face set, which is merged into the new one below.
    uploads = [u for u in usable if u.blob is not None]
    # The face set enrolled before: the person new faces must match, and the faces merged in below when their
    # uploads' raw files are gone.
    enrolled = identity_faces(ctx, identity) if identity.faceset is not None else None
    earlier = enrolled if enrolled is not None and any(u.blob is None for u in usable) else None
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
        path = ctx.call(store.decrypt_to(u.blob, inputs_dir / f"{u.id}{safe_suffix(u.filename)}"))
        if u.kind is UploadKind.VIDEO:
            try:  # every cap before any frame is decoded: a 4096x4096 or 1000 fps video is refused in seconds
                check_video(path, ctx.settings)
            except MediaError as exc:
                reason = named(exc.message, path.name, u.filename)
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
    ctx.progress("faces", 0.0, f"looking for {identity.display_name}'s face in {len(paths)} file(s)")
    out = ctx.folder / "faceset"
    s = ctx.settings
    embedder = FaceEmbedder()
    # The person enrolled before votes with the weight of their faces, so that new faces of them stay and others
    # are turned down one by one; unless the user said to add the new ones anyway.
    before = faceset_reference(enrolled, embedder)[0] if enrolled is not None else None
    prior = (before, float(max(identity.face_count, 1))) if before is not None and not add_anyway else None
    try:
        report = build_faceset(
            paths,
            out,
            landmarker_path(s.models_path),
            max_image_pixels=s.max_image_pixels,
            hair_model=hair_segmenter_path(s.models_path),
            max_video_seconds=s.max_clip_seconds,
            max_video_pixels=s.max_clip_pixels,
            embedder=embedder,
            prior=prior,
            on_progress=lambda fraction, message: ctx.progress("faces", fraction, message),
        )
    except OtherPerson as exc:
        return _ask_first(ctx, identity, by_source, exc.report, lines)
    except NoFaceFound as exc:
        exc.message = _as_sent(exc.message, by_source)
        for u in by_source.values():
            if u.status == UploadStatus.PENDING:
                ctx.call(store.record_upload_outcome(u.id, UploadStatus.REJECTED, reason=exc.message))
        keep = IdentityStatus.READY if identity.faceset is not None else IdentityStatus.EMPTY
        ctx.call(store.set_identity_status(guild, identity_id, keep))
        raise
    if prior is not None and before is not None and report.reference is not None:
        # The new faces may outvote the ones enrolled before (a long video of someone else): ask then too.
        apart = float(distances(report.reference, before)[0, 0])
        log.info("job %d: the new faces of identity %d are %.2f from its reference (same person below %.2f)",
                 ctx.job.id, identity.id, apart, SAME_PERSON)
        if apart >= SAME_PERSON:
            return _ask_first(ctx, identity, by_source, report, lines)
    for source, u in by_source.items():
        kept = sum(1 for r in report.kept if r.source == source)
        problems = [r for r in report.rejected if r.source == source and r.frame is None]
        if kept:
            ctx.call(store.record_upload_outcome(u.id, UploadStatus.ACCEPTED, faces_found=kept))
            dropped = sum(1 for r in report.rejected if r.source == source and r.frame is not None
                          and r.reason == OTHER_PERSON)
            lines.append(f"{u.filename}: {kept} face{'s' if kept != 1 else ''} kept"
                         + (f" ({dropped} frames showing someone else left out)" if dropped else ""))
        else:
            reason = _as_sent(problems[0].detail, by_source) if problems else "no usable face"
            ctx.call(store.record_upload_outcome(u.id, UploadStatus.REJECTED, reason=reason))
            lines.append(f"{u.filename}: rejected — {reason}")
    summary = _as_sent(report.summary(), by_source)
    total = len(report.kept)
    if earlier is not None:
        total = merge_facesets(out, earlier)
        summary += f" ({total} faces in all with the ones enrolled before)"
    archive = pack_faceset(out, ctx.folder / "faceset.tar")
    thumb = thumbnail_grid(out)
    ctx.call(
        store.set_faceset(
            guild, identity_id, archive, face_count=total,
            summary={"text": summary, "lines": lines}, thumbnail=thumb,
        )
    )  # fmt: skip
    return Outcome(comparison=thumb, report={"kind": "prepare", "identity": identity.display_name,
                                             "faces": total, "summary": summary, "lines": lines})


def _ask_first(
    ctx: JobContext, identity: Identity, by_source: dict[str, Upload], report: FaceSetReport, lines: list[str]
) -> Outcome:
    """The new uploads show someone else than the person enrolled before: store nothing, leave those with such faces
    pending (the others get their verdict: no face, blurry...), and end with the question (the bot shows it with
    "Add anyway" / "Leave them out"; the command line says which flag adds them)."""
    pending = []
    for source, u in by_source.items():
        if u.status != UploadStatus.PENDING:
            continue
        faces = any(r.source == source for r in report.kept) or any(
            r.source == source and r.reason == OTHER_PERSON for r in report.rejected)
        problems = [r for r in report.rejected if r.source == source and r.frame is None]
        if faces:
            pending.append(u)
        else:
            reason = _as_sent(problems[0].detail, by_source) if problems else "no usable face"
            ctx.call(ctx.store.record_upload_outcome(u.id, UploadStatus.REJECTED, reason=reason))
            lines.append(f"{u.filename}: rejected — {reason}")
    names = ", ".join(u.filename for u in pending) or "the new files"
    message = (
        f"{names} {'does' if len(pending) == 1 else 'do'} not look like {identity.display_name} as enrolled before "
        f"(another person's face, or a big change such as a beard or years passing). Nothing was added yet."
    )
    ctx.call(ctx.store.set_identity_status(ctx.job.guild_id, identity.id, IdentityStatus.READY))
    return Outcome(report={
        "kind": "prepare", "needs_confirm": True, "identity": identity.display_name, "message": message,
        "uploads": [u.id for u in pending], "faces": identity.face_count, "summary": _as_sent(report.summary(), by_source),
        "lines": lines,
    })  # fmt: skip


def _as_sent(text: str, by_source: dict[str, Upload]) -> str:
    """``text`` from the engine naming every upload as the user sent it, not as this job stored it (``12.jpg``)."""
    if not by_source:
        return text
    names = "|".join(re.escape(stored) for stored in sorted(by_source, key=len, reverse=True))
    # One pass, so a name the user gave (say "2.jpg") is never taken for another stored name.
    return re.sub(rf"(?<![\w.])(?:{names})(?!\w)", lambda m: by_source[m.group(0)].filename, text)
