"""One person per face set: which of an enrollment's aligned faces show the person most of them show, embedding
only a sample of them.

Contract:
- ``check_one_person(faces, embedder, ...) -> PersonCheck``. ``faces`` are ``FaceToCheck`` (an
  aligned crop ``(S, S, 3)`` uint8 RGB, its landmarks ``(478, 2)`` float32 in crop pixels, its input's name and
  frame number, None for a photo). Every photo is embedded; a video's faces are embedded at ``samples_per_video``
  evenly spaced frames, then between two embedded frames that disagree until they agree or are neighbours; the
  others take the verdict of the nearest embedded frame of the same video.
- The person is the majority of the embedded faces, each weighted by how many faces of its input it stands for
  (``embed.majority``; a tie goes to the earliest input). ``prior=(reference, weight)``, the person enrolled
  before, votes too, as ``weight`` faces (the faces enrolled). A face is that person when its embedding is below
  ``threshold`` from the person's centre: the prior's reference when the prior is in the majority, else the
  centroid of the majority's embeddings.
- ``PersonCheck.same`` ``(N,)`` bool, ``embedded`` ``(N,)`` bool, ``reference`` ``(128,)`` float32 (the centroid of
  the person's embedded faces; the prior's reference when none is the person), ``count``: how many embeddings that
  centroid averages, ``prior_won``: whether the person is the prior's.
- ``crop_embeddings(crops, points, embedder)``: ``(N, 128)`` embeddings of aligned crops (dlib's alignment runs in
  the crop, the box from the landmarks): as close to the full frame's as two frames of a video are (< 0.12).

The embedding decides only who is who: it never weighs a face for training or scores a result.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from swap_engine.embed import EMBED_DIM, SAME_PERSON, FaceEmbedder, distances, majority

# Embedded faces of one selfie video before refining where the verdict changes: a video is one person or
# switches a few times, so a handful of evenly spaced frames finds the switches to refine.
SAMPLES_PER_VIDEO = 8
# At most this many more embeddings per video while refining (about 2 s on a 2-core CPU).
MAX_REFINE_PER_VIDEO = 24

EmbedFn = Callable[[Sequence[int]], np.ndarray]  # face indices -> (len, 128) embeddings


@dataclass(frozen=True, eq=False)
class FaceToCheck:
    """One aligned face of an enrollment: its crop, its landmarks in the crop, where it came from."""

    crop: np.ndarray  # (S, S, 3) uint8 RGB
    points: np.ndarray  # (478, 2) float32 crop pixels
    source: str
    frame: int | None  # None: a photo


@dataclass(frozen=True, eq=False)
class PersonCheck:
    """Who is who among the faces checked (see the module docstring)."""

    same: np.ndarray  # (N,) bool
    embedded: np.ndarray  # (N,) bool: embedded, not judged by a neighbour
    reference: np.ndarray  # (128,) float32
    count: int  # embeddings averaged into ``reference``
    prior_won: bool = False  # the person is the one enrolled before (``prior``)


def crop_embeddings(crops: Sequence[np.ndarray], points: Sequence[np.ndarray], embedder: FaceEmbedder) -> np.ndarray:
    """``(N, 128)`` float32 embeddings of aligned crops, the face's box taken from its landmarks."""
    out = np.zeros((len(crops), EMBED_DIM), np.float32)
    for i, (crop, p) in enumerate(zip(crops, points, strict=True)):
        box = (float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max()))
        out[i] = embedder.embed(crop, [box])[0]
    return out


def check_one_person(
    faces: Sequence[FaceToCheck],
    embedder: FaceEmbedder | EmbedFn,
    *,
    prior: tuple[np.ndarray, float] | None = None,
    threshold: float = SAME_PERSON,
    samples_per_video: int = SAMPLES_PER_VIDEO,
    max_refine: int = MAX_REFINE_PER_VIDEO,
) -> PersonCheck:
    """Which ``faces`` show one person; see the module docstring. ``embedder`` is a ``FaceEmbedder`` or a function
    from face indices to their embeddings."""
    n = len(faces)
    embed: EmbedFn
    if isinstance(embedder, FaceEmbedder):
        model = embedder

        def embed_crops(indices: Sequence[int]) -> np.ndarray:
            return crop_embeddings([faces[i].crop for i in indices], [faces[i].points for i in indices], model)

        embed = embed_crops
    else:
        embed = embedder
    vectors = np.zeros((n, EMBED_DIM), np.float32)
    embedded = np.zeros(n, bool)
    if n == 0:
        return PersonCheck(np.zeros(0, bool), embedded, np.zeros(EMBED_DIM, np.float32), 0)

    def embed_into(indices: Sequence[int]) -> None:
        todo = [i for i in indices if not embedded[i]]
        if todo:
            vectors[todo] = np.asarray(embed(todo), np.float32).reshape(len(todo), EMBED_DIM)
            embedded[todo] = True

    videos: dict[str, list[int]] = defaultdict(list)
    for i, face in enumerate(faces):
        if face.frame is not None:
            videos[face.source].append(i)
    for members in videos.values():
        members.sort(key=lambda i: faces[i].frame or 0)
    # First pass: every photo, and evenly spaced frames of each video.
    weight = np.zeros(n, np.float64)
    for i, face in enumerate(faces):
        if face.frame is None:
            weight[i] = 1.0
    for members in videos.values():
        picks = np.unique(np.linspace(0, len(members) - 1, min(len(members), samples_per_video)).round().astype(int))
        # Each sample stands for the frames nearest to it.
        nearest = np.abs(np.arange(len(members))[:, None] - picks[None, :]).argmin(1)
        for k, p in enumerate(picks):
            weight[members[p]] = float((nearest == k).sum())
    embed_into([i for i in range(n) if weight[i] > 0])

    first = np.flatnonzero(embedded)
    voters, votes = vectors[first], weight[first]
    if prior is not None:  # the faces enrolled before vote first, as one heavy face
        voters = np.concatenate([np.asarray(prior[0], np.float32).reshape(1, EMBED_DIM), voters])
        votes = np.concatenate([[float(prior[1])], votes])
    chosen = majority(voters, threshold, weights=votes)
    prior_won = prior is not None and bool(chosen[0])
    person = first[chosen[1:] if prior is not None else chosen]
    ref = voters[0] if prior_won else vectors[person].mean(0).astype(np.float32)

    def verdict(indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.asarray(distances(vectors[list(indices)], ref[None])[:, 0] < threshold, bool)

    # Second pass: where two embedded frames of a video disagree, embed between them until the switch is found.
    for members in videos.values():
        spent = 0
        while spent < max_refine:
            done = [k for k, i in enumerate(members) if embedded[i]]
            agree = verdict([members[k] for k in done])
            pairs = zip(done[:-1], done[1:], agree[:-1], agree[1:], strict=True)
            gaps = [(a, b) for a, b, x, y in pairs if x != y and b - a > 1]
            if not gaps:
                break
            middles = [members[(a + b) // 2] for a, b in gaps][: max_refine - spent]
            embed_into(middles)
            spent += len(middles)

    same = np.zeros(n, bool)
    same[embedded] = verdict(np.flatnonzero(embedded))
    for members in videos.values():
        positions = np.array([k for k, i in enumerate(members) if embedded[i]])
        for k, i in enumerate(members):
            if not embedded[i]:
                same[i] = same[members[int(positions[np.abs(positions - k).argmin()])]]
    # The reference: the centroid of every embedded face of the person (refinement may have added some).
    person = np.flatnonzero(embedded & same)
    if len(person):
        ref = vectors[person].mean(0).astype(np.float32)
    return PersonCheck(same, embedded, np.asarray(ref, np.float32), len(person), prior_won)
