"""Typed job payloads: one frozen dataclass per job kind, shared by the bot (which queues them) and the worker (which
runs them); ``to_json`` / ``job_from_json`` round-trip them, and unknown, missing or mistyped fields raise
``JobSpecError`` naming them, never pass silently."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, ClassVar


class JobKind(StrEnum):
    """What a worker does with a job: build a face set, fine-tune a bank, swap a clip, make a finished swap smaller, or
    warm the guild's bank in the background (lowest priority, preempted by any other job)."""

    PREPARE = "prepare"
    TRAIN = "train"
    SWAP = "swap"
    REFIT = "refit"
    WARM = "warm"


class JobSpecError(ValueError):
    """A payload that is not a job of its kind: unknown or missing fields, or a value of the wrong type."""


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What every job carries: the title the bot shows above its progress."""

    kind: ClassVar[JobKind]
    title: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True, kw_only=True)
class PrepareJob(JobSpec):
    """Build the face set of the job's one identity from its uploads."""

    kind: ClassVar[JobKind] = JobKind.PREPARE
    identity_id: int | None = None
    identity_name: str = ""
    # The new faces go in even when they are not the person enrolled before (the user was asked and said so).
    add_anyway: bool = False


@dataclass(frozen=True, kw_only=True)
class TrainJob(JobSpec):
    """Fine-tune the guild's bank for the job's identities."""

    kind: ClassVar[JobKind] = JobKind.TRAIN
    model: str | None = None  # lite / original / hires; None: the setting, else by device
    train_seconds: float | None = None  # None: by device and quality
    seed: int = 0


@dataclass(frozen=True)
class Casting:
    """One identity of a swap and the face of the clip it replaces (0-based person: "Face N" is N - 1; None: the
    main one not taken by another, or ask)."""

    identity_id: int | None
    identity_name: str
    face: int | None


@dataclass(frozen=True, kw_only=True)
class SwapJob(JobSpec):
    """Put the job's identity into the clip (the job's input) in place of face ``track``, and each of the
    ``also_*`` identities in place of its face, in one pass."""

    kind: ClassVar[JobKind] = JobKind.SWAP
    identity_id: int | None = None
    identity_name: str = ""
    clip_name: str = "clip.mp4"  # as the user sent it: messages name the clip so
    # The person of the clip to replace, 0-based as on the contact sheet (the bot's "Face N" is N - 1); None: the main
    # person, or ask. Payloads stored before people were grouped meant a track: tracks and people are numbered
    # alike (by screen time × size), so a choice made then still names the same face unless the clip has cuts.
    track: int | None = None
    # Further people, in the order asked: identity, name and face (0-based, or None) at the same position.
    also_identity_ids: list[int] = field(default_factory=list)
    also_identity_names: list[str] = field(default_factory=list)
    also_faces: list[int | None] = field(default_factory=list)
    ask: bool = True  # with track None and several competing faces, ask which (the bot) rather than take the main one
    quality: str | None = None  # preview / best; None: FAMSWAP_QUALITY
    max_bytes: int | None = None  # size limit of the video; None: FAMSWAP_OUTPUT_MAX_MB
    model: str | None = None
    train_seconds: float | None = None
    train_steps: int | None = None  # exactly this many steps instead of a time budget
    seed: int = 0

    def __post_init__(self) -> None:
        if not len(self.also_identity_ids) == len(self.also_identity_names) == len(self.also_faces):
            raise JobSpecError("a swap job's also_identity_ids, also_identity_names and also_faces differ in length")

    def cast(self) -> list[Casting]:
        """Every identity of the swap with its face, the first one first."""
        also = zip(self.also_identity_ids, self.also_identity_names, self.also_faces, strict=True)
        return [Casting(self.identity_id, self.identity_name, self.track)] + [Casting(*c) for c in also]

    def with_face(self, position: int, face: int) -> SwapJob:
        """The same swap with identity ``position`` (0: the first) replacing ``face`` (0-based)."""
        if position == 0:
            return replace(self, track=face)
        faces = list(self.also_faces)
        faces[position - 1] = face
        return replace(self, also_faces=faces)


@dataclass(frozen=True, kw_only=True)
class RefitJob(JobSpec):
    """Re-encode a finished swap (the job's input) to at most ``max_bytes``, keeping its label and metadata."""

    kind: ClassVar[JobKind] = JobKind.REFIT
    refit_of: int
    max_bytes: int
    identity_id: int | None = None
    identity_name: str = ""
    clip_name: str = "clip.mp4"


@dataclass(frozen=True, kw_only=True)
class WarmJob(JobSpec):
    """Train the guild's bank (the shared encoder and the decoders of the job's identities) while nothing else waits:
    handed back at a checkpoint as soon as another job is queued, resumed later; ends at a loss plateau, at the
    guild's daily allowance (``FAMSWAP_WARM_MINUTES_PER_DAY``) or after ``minutes`` / ``steps``."""

    kind: ClassVar[JobKind] = JobKind.WARM
    minutes: float | None = None  # None: the rest of the guild's daily allowance (`famswap train --minutes` sets it)
    steps: int | None = None  # exactly this many steps in all (benchmarks, tests), no plateau stop
    model: str | None = None
    seed: int = 0


SPECS: dict[JobKind, type[JobSpec]] = {
    spec.kind: spec for spec in (PrepareJob, TrainJob, SwapJob, RefitJob, WarmJob)
}


def _accepts(hint: Any, value: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_accepts(h, value) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def job_from_dict(kind: JobKind | str, data: Mapping[str, Any]) -> JobSpec:
    """The typed job of ``kind`` from its fields; ``JobSpecError`` naming unknown, missing or mistyped fields."""
    try:
        spec = SPECS[JobKind(kind)]
    except ValueError as exc:
        raise JobSpecError(f"{kind!r} is not a job kind") from exc
    known = {f.name: f for f in fields(spec)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise JobSpecError(f"a {spec.kind.value} job has no field(s) {', '.join(unknown)}")
    missing = sorted(
        n for n, f in known.items() if n not in data and f.default is MISSING and f.default_factory is MISSING
    )
    if missing:
        raise JobSpecError(f"a {spec.kind.value} job needs the field(s) {', '.join(missing)}")
    hints = typing.get_type_hints(spec)
    for name, value in data.items():
        if not _accepts(hints[name], value):
            raise JobSpecError(f"{spec.kind.value} job field {name} = {value!r} is not a {hints[name]}")
    return spec(**data)


def job_from_json(kind: JobKind | str, text: str) -> JobSpec:
    """The typed job of ``kind`` stored as ``text`` (``to_json``'s output)."""
    data = json.loads(text or "{}")
    if not isinstance(data, dict):
        raise JobSpecError(f"a {kind} job's payload is not a JSON object: {text[:80]!r}")
    return job_from_dict(kind, data)
