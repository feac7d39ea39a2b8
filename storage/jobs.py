"""Typed job payloads: one frozen dataclass per job kind, shared by the bot (which queues them) and the worker (which
runs them); ``to_json`` / ``job_from_json`` round-trip them, and unknown, missing or mistyped fields raise
``JobSpecError`` naming them, never pass silently."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from enum import StrEnum
from typing import Any, ClassVar


class JobKind(StrEnum):
    """What a worker does with a job: build a face set, fine-tune a bank, swap a clip, or make a finished swap smaller."""

    PREPARE = "prepare"
    TRAIN = "train"
    SWAP = "swap"
    REFIT = "refit"


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


@dataclass(frozen=True, kw_only=True)
class SwapJob(JobSpec):
    """Put the job's one identity into the clip (the job's input) in place of face ``track``."""

    kind: ClassVar[JobKind] = JobKind.SWAP
    identity_id: int | None = None
    identity_name: str = ""
    clip_name: str = "clip.mp4"  # as the user sent it: messages name the clip so
    track: int | None = None  # 0-based (the bot's "Face N" is track N - 1); None: the main face, or ask
    ask: bool = True  # with track None and several competing faces, ask which (the bot) rather than take the main one
    quality: str | None = None  # preview / best; None: FAMSWAP_QUALITY
    max_bytes: int | None = None  # size limit of the video; None: FAMSWAP_OUTPUT_MAX_MB
    model: str | None = None
    train_seconds: float | None = None
    train_steps: int | None = None  # exactly this many steps instead of a time budget
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class RefitJob(JobSpec):
    """Re-encode a finished swap (the job's input) to at most ``max_bytes``, keeping its label and metadata."""

    kind: ClassVar[JobKind] = JobKind.REFIT
    refit_of: int
    max_bytes: int
    identity_id: int | None = None
    identity_name: str = ""
    clip_name: str = "clip.mp4"


SPECS: dict[JobKind, type[JobSpec]] = {spec.kind: spec for spec in (PrepareJob, TrainJob, SwapJob, RefitJob)}


def _accepts(hint: Any, value: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_accepts(h, value) for h in typing.get_args(hint))
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
    missing = sorted(n for n, f in known.items() if n not in data and f.default is MISSING)
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
