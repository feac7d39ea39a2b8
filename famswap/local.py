"""The command line's flows: swap a clip start to finish and enroll (jobs the worker's code runs here, through
storage in the local guild), list tracks, list and forget enrolled people."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from common.config import Settings
from common.errors import ConfigError, NoFaceFound, NotFound, UnsupportedMedia
from famswap.progress import StageBar, format_duration
from storage.api import LOCAL_GUILD, LOCAL_USER

if TYPE_CHECKING:
    from famswap.cli import PersonArg

log = logging.getLogger("famswap")
T = TypeVar("T")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _check_input(path: Path) -> None:
    if not path.exists():
        raise UnsupportedMedia(f"{path} does not exist.", hint="Check the path.")


def _landmarker(settings: Settings) -> Path:
    from swap_engine.assets import landmarker_path

    return landmarker_path(settings.models_path)


class _Bars:
    """The worker's progress as a bar per stage on stderr (``faces``, the prepare job's stage, is shown as enroll)."""

    NAMES = {"faces": "enroll"}

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar: StageBar | None = None

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        if stage != self.stage:
            self.close()
            self.stage, self.bar = stage, StageBar(self.NAMES.get(stage, stage))
        assert self.bar is not None
        self.bar.update(round(fraction * 100), 100, message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.stage, self.bar = None, None


def _enroll_from(settings: Settings, paths: list[Path], bars: _Bars) -> str:
    """Enroll the person shown in ``paths`` (photos, folders, selfie videos) as ``from-<hash of the files>``, or
    reuse that identity when the same files were enrolled before; returns the name."""
    import hashlib

    from swap_engine.media import sniff_kind
    from swap_engine.pipeline import file_digest
    from worker.context import check_video
    from worker.local import enroll_local

    for p in paths:
        _check_input(p)
    files = sorted(f for p in paths for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())))
    for f in files:
        if sniff_kind(f) == "video":
            check_video(f, settings)  # every cap before decoding: a 4096x4096 selfie video is refused in seconds
    name = "from-" + hashlib.sha256("".join(file_digest(f) for f in files).encode()).hexdigest()[:12]

    async def enrolled() -> bool:
        from storage import open_storage

        async with open_storage(settings) as store:
            try:
                return (await store.find_identity(LOCAL_GUILD, LOCAL_USER, name)).faceset is not None
            except NotFound:
                return False

    if _run(enrolled()):
        _say(f"enroll      {name}: the same files as before; reusing its faces")
        return name
    try:
        outcome = _run(enroll_local(settings, LOCAL_GUILD, LOCAL_USER, name, paths, on_progress=bars))
    finally:
        bars.close()
    for line in outcome.lines:
        _say(f"enroll      {line}")
    if not outcome.kept:
        raise NoFaceFound(outcome.summary.removeprefix("Nothing enrolled: "), hint="Try clearer photos of the face.")
    _say(f"enroll      {outcome.summary} (`famswap forget {name}` erases it)")
    return name


def swap(settings: Settings, args: argparse.Namespace, cast: list[PersonArg]) -> int:
    """`famswap swap`: enroll (or use enrolled people) → a swap job run here by the worker's own code, with a bar per
    stage; writes OUT, OUT.compare.gif and OUT.json. ``cast``: who goes in, each with their face (from 1) or None."""
    from storage import SwapJob
    from swap_engine import pipeline
    from swap_engine.video import probe
    from worker.local import swap_local

    started = time.monotonic()
    clip: Path = args.clip
    _check_input(clip)
    # The frame rate and frame count are capped as for the bot (the frames are what costs time), not the length.
    info = probe(clip, max_fps=settings.max_clip_fps, max_frames=settings.max_clip_frames)
    device = pipeline.resolve_device(args.device or settings.device)
    model = pipeline.choose_model(args.model, settings.model, device)
    minutes = args.train_minutes if args.train_minutes is not None else settings.train_seconds(device) / 60.0
    steps = getattr(args, "train_steps", None)
    budget = f"{steps} steps" if steps else f"{minutes:g} min"
    if not steps and args.train_minutes is None and settings.warm_swap_share < 1:
        budget += f" ({minutes * settings.warm_swap_share:.1f} min if everyone in it is warm)"
    _say(f"famswap     {clip.name}: {info.width}x{info.height}, {info.duration:.1f} s; model {model} on {device}, "
         f"training {budget}")
    bars = _Bars()
    people = [(c.identity or _enroll_from(settings, list(c.identity_from or []), bars),
               None if c.face is None else c.face - 1) for c in cast]  # fmt: skip
    max_mb = args.max_mb if args.max_mb is not None else settings.output_max_mb
    spec = SwapJob(clip_name=clip.name, ask=False, max_bytes=int(max_mb * 1024 * 1024),
                   model=model, train_seconds=None if args.train_minutes is None else minutes * 60.0,
                   train_steps=steps, seed=args.seed or 0,
                   title=f"{' and '.join(name for name, _ in people)} → {clip.name}")  # fmt: skip
    try:
        outcome = _run(swap_local(settings, clip, people, spec, args.out, device=device, on_progress=bars))
    finally:
        bars.close()
    report = outcome.report
    for person in report.get("people") or []:
        _say(f"person      face {person['face']} as {person['identity']}: swapped in {person['swapped']} of "
             f"{report.get('frames')} frames (seen in {person['frames']})")
    if any(c.face is None for c in cast) and int(report.get("faces") or 1) > len(cast):
        _say(f"scan        the clip shows {report.get('faces')} people; `famswap tracks {clip}` numbers them for "
             "--face")
    for note in report.get("notes") or []:
        _say(f"note        {note}")
    _say(
        f"done        {outcome.video} ({report.get('bytes', 0) / 1e6:.1f} MB, {report.get('frames')} frames, "
        f"{report.get('swapped')} swapped; model {report.get('model', model)}, {report.get('train_step')} training "
        f"steps) in {format_duration(time.monotonic() - started)}; before/after: {outcome.comparison}"
    )
    return 0


def tracks(settings: Settings, clip: Path, out: Path | None) -> int:
    """`famswap tracks`: list the clip's people (numbered from 1, as `famswap swap --face` and the contact sheet
    count them) with their shots, and write the contact sheet."""
    from swap_engine import pipeline

    _check_input(clip)
    with StageBar("scan") as bar:
        scan = pipeline.scan_video(clip, _landmarker(settings), max_frames=settings.max_clip_frames,
                                   on_progress=lambda d, t, m: bar.update(d, t))
    sheet = pipeline.write_contact_sheet(clip, scan, out or clip.with_name(clip.stem + ".tracks.jpg"))
    cuts = ", ".join(str(c) for c in sorted(scan.cuts)) or "none"
    print(f"{scan.frame_count} frames; cuts before frame {cuts}")
    for p in scan.people:
        shots = ", ".join(f"{t.first}-{t.last}" for t in p.tracks)
        main = " (the main person: swapped when no --face is given)" if p.index == 0 else ""
        print(f"face {p.number}: {len(p.tracks)} shot(s), frames {shots} ({len(p.faces)} seen), face up to "
              f"{p.best_size():.0f} px{main}")
    hidden = len(scan.tracks) - sum(len(p.tracks) for p in scan.people)
    if hidden:
        print(f"({hidden} more face track(s) too small to swap)")
    print(f"contact sheet: {sheet}")
    return 0


# -----------------------------------------------------------------------------
# stored identities (the same storage and worker the bot uses)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def enroll(settings: Settings, name: str, paths: list[Path], *, add_anyway: bool = False) -> int:
    """`famswap enroll`: store the inputs and build the face set through the worker; one line per input. New faces
    that are not the person enrolled before as NAME are refused unless ``add_anyway``."""
    from worker.local import enroll_local

    outcome = _run(enroll_local(settings, LOCAL_GUILD, LOCAL_USER, name, paths, add_anyway=add_anyway))
    for line in outcome.lines:
        print(line)
    print(outcome.summary)
    if outcome.question is not None:
        print(outcome.question)
        print(f"If they are {name}: famswap enroll --add-anyway {name} with the same files.")
    return 0 if outcome.kept else 1


def list_identities(settings: Settings) -> int:
    async def go() -> int:
        from storage import open_storage

        async with open_storage(settings) as store:
            people = await store.list_identities(LOCAL_GUILD, LOCAL_USER)
            warmth = await store.warmth(LOCAL_GUILD)
            if not people:
                print("Nobody is enrolled yet: `famswap enroll NAME PHOTOS...`")
            for i in people:
                warm = warmth[i.id].text() if i.id in warmth else "not trained yet"
                print(f"{i.display_name}: {i.face_count} faces, {i.status.value}; {warm}")
        return 0

    return _run(go())


def train(settings: Settings, minutes: float | None, steps: int | None, device: str | None) -> int:
    """`famswap train`: warm the local bank now (every enrolled person) for ``minutes`` (default: what is left of
    today's FAMSWAP_WARM_MINUTES_PER_DAY) or exactly ``steps``, stopping early at a loss plateau."""
    from worker.local import warm_local

    if minutes is None and steps is None and settings.warm_minutes_per_day <= 0:
        raise ConfigError("Warming is off (FAMSWAP_WARM_MINUTES_PER_DAY=0).",
                          hint="Say how long with --minutes M, or set FAMSWAP_WARM_MINUTES_PER_DAY.")
    bars = _Bars()
    try:
        report = _run(warm_local(settings, minutes=minutes, steps=steps, device=device, on_progress=bars))
    finally:
        bars.close()
    words = {"plateau": "the loss stopped improving", "allowance": "today's allowance is used up",
             "minutes": f"{minutes:g} minutes are up" if minutes else "the time is up", "steps": "all steps done",
             "handed back": "another job is waiting; it resumes later", "nobody to warm": "nobody is enrolled"}
    stopped = str(report.get("stopped"))
    print(f"warmed the face bank {report.get('steps', 0)} steps in {format_duration(float(report.get('seconds', 0)))}"
          f": {words.get(stopped, stopped)}")
    return list_identities(settings)


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
        dropped = _drop_legacy_banks(settings)
        print(
            f"Forgot {identity.display_name}: {report.uploads} upload(s), {report.results} result(s), "
            f"{report.files} stored file(s) erased" + (f"; {dropped} old local bank file(s) deleted" if dropped else "")
        )
        return 0

    return _run(go())


def _drop_legacy_banks(settings: Settings) -> int:
    """Delete the encrypted ``local/bank-*.enc`` files earlier versions of the command line kept (its decoders now
    live in storage's bank, which ``forget`` cleans): they may hold the forgotten person's decoder, and nothing reads
    them any more. Returns how many were deleted."""
    legacy = sorted((settings.home / "local").glob("bank-*.enc"))
    for path in legacy:
        path.unlink()
    return len(legacy)
