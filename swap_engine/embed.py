"""Face identity embeddings, only to tell whether two faces are the same person: `FaceEmbedder.embed(rgb, boxes)`
-> `(N, 128)` float32 (dlib's face-recognition ResNet; two faces of one person are less than `SAME_PERSON` apart,
Euclidean), plus pure grouping helpers on such arrays.

Never a training signal, a checkpoint chooser or a quality score: conversion and training do not import this module.
The weights ship inside the `face-recognition-models` package (nothing is downloaded); `dlib-bin` runs them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from common.errors import ModelFileError

# dlib's own threshold for its 128-d embedding: pairs of one person are below it (LFW accuracy 99.38 %).
SAME_PERSON = 0.6
# Groups whose members are this close on average are merged. dlib's own threshold: a face 45 px high in a wide shot
# and the same singer's close-up are 0.56 apart (stage_multi_face.mp4), so 0.5 kept them two people. Averaging over
# several faces per track, and never merging tracks seen at the same time (``group``'s ``apart``), keep look-alikes
# in one shot apart.
GROUP_DISTANCE = SAME_PERSON
EMBED_DIM = 128
# dlib's aligned face chip: 150 px with a quarter of padding round the 5-point alignment.
_CHIP_SIZE = 150
_CHIP_PADDING = 0.25


def models_dir() -> Path:
    """Where `face-recognition-models` keeps its weights, found without importing it (its `__init__` needs
    `pkg_resources`, which new setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "The face-recognition weights (package face-recognition-models) are not installed.",
            hint="Reinstall famswap: pip install -e . (it brings dlib-bin and face-recognition-models).",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class FaceEmbedder:
    """dlib's 5-point alignment + 128-d ResNet. Not thread-safe: one per thread."""

    def __init__(self, weights: Path | None = None) -> None:
        try:
            import dlib
        except ImportError as exc:  # pragma: no cover - the package is a dependency
            raise ModelFileError("dlib is not installed.", hint="Reinstall famswap: pip install -e .") from exc
        folder = weights or models_dir()
        shape = folder / "shape_predictor_5_face_landmarks.dat"
        net = folder / "dlib_face_recognition_resnet_model_v1.dat"
        for path in (shape, net):
            if not path.is_file():
                raise ModelFileError(f"{path} is missing.", hint="Reinstall the face-recognition-models package.")
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(shape))
        self._net = dlib.face_recognition_model_v1(str(net))

    def embed(self, rgb: np.ndarray, boxes: Sequence[tuple[float, float, float, float]]) -> np.ndarray:
        """`(N, 128)` float32 embeddings of the faces in ``boxes`` ((x0, y0, x1, y1) pixels) of an RGB uint8 image."""
        if not boxes:
            return np.zeros((0, EMBED_DIM), np.float32)
        image = np.ascontiguousarray(rgb)
        h, w = image.shape[:2]
        shapes = self._dlib.full_object_detections()
        for x0, y0, x1, y1 in boxes:
            rect = self._dlib.rectangle(int(max(0, x0)), int(max(0, y0)), int(min(w - 1, x1)), int(min(h - 1, y1)))
            shapes.append(self._shape(image, rect))
        chips = self._dlib.get_face_chips(image, shapes, size=_CHIP_SIZE, padding=_CHIP_PADDING)
        vectors = self._net.compute_face_descriptor(chips)
        return np.asarray([np.asarray(v, np.float32) for v in vectors], np.float32).reshape(len(boxes), EMBED_DIM)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances `(len(a), len(b))` between two sets of embeddings."""
    a = np.asarray(a, np.float32).reshape(-1, EMBED_DIM)
    b = np.asarray(b, np.float32).reshape(-1, EMBED_DIM)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    out: np.ndarray = np.sqrt(np.maximum(d2, 0.0))
    return out


def group(
    embeddings: Sequence[np.ndarray], apart: Collection[tuple[int, int]] = (), threshold: float = GROUP_DISTANCE
) -> list[int]:
    """Group sets of embeddings (one set per track, each `(n_i, 128)`) into people: average-linkage clustering of
    the sets, merging while the mean distance between two groups' faces is below ``threshold``, never into one group
    two sets named as a pair (i, j) in ``apart`` (tracks seen at the same time). Returns a person number per set,
    numbered from 0 in order of first appearance; a set with no embeddings is a person of its own."""
    sets = [np.asarray(e, np.float32).reshape(-1, EMBED_DIM) for e in embeddings]
    n = len(sets)
    sizes = np.array([len(x) for x in sets], np.float64)
    # Mean face-to-face distance between groups, kept up to date on each merge (Lance-Williams for average
    # linkage), so a long clip's hundred tracks group in milliseconds; inf: never to be merged.
    link = np.full((n, n), np.inf)
    for i in range(n):
        for j in range(i + 1, n):
            if sizes[i] and sizes[j]:
                link[i, j] = link[j, i] = float(distances(sets[i], sets[j]).mean())
    for i, j in apart:
        link[i, j] = link[j, i] = np.inf
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    while len(members) > 1:
        i, j = divmod(int(np.argmin(link)), n)
        if not link[i, j] < threshold:
            break
        i, j = min(i, j), max(i, j)
        with np.errstate(invalid="ignore"):  # inf × 0 never happens: empty sets are never merged
            merged = (sizes[i] * link[i] + sizes[j] * link[j]) / (sizes[i] + sizes[j])
        link[i, :] = link[:, i] = merged
        link[j, :] = link[:, j] = np.inf
        link[i, i] = np.inf
        sizes[i] += sizes[j]
        members[i] += members.pop(j)
    labels = [0] * n
    for person, m in enumerate(sorted((sorted(m) for m in members.values()), key=min)):
        for i in m:
            labels[i] = person
    return labels


def majority(
    embeddings: np.ndarray, threshold: float = SAME_PERSON, *, weights: np.ndarray | None = None
) -> np.ndarray:
    """Which of ``embeddings`` (`(N, 128)`) show the person most of them show: a bool mask. The majority person's
    centre is the medoid of the largest set of mutually close faces; a face belongs when it is below ``threshold``
    from that centre. ``weights`` `(N,)` (default 1 each) count a face as that many faces, e.g. a sampled video
    frame standing for its neighbours. One face alone is its own majority; ties go to the tighter group, then to
    the earliest face."""
    e = np.asarray(embeddings, np.float32).reshape(-1, EMBED_DIM)
    if len(e) <= 1:
        return np.ones(len(e), bool)
    d = distances(e, e)
    close = d < threshold
    # The face with the most close neighbours (ties: the smallest summed distance to them) is the centre.
    w = np.ones(len(e)) if weights is None else np.asarray(weights, np.float64).reshape(len(e))
    counts = (close * w[None, :]).sum(1)
    spread = np.where(close, d, 0.0).sum(1)
    centre = int(np.lexsort((spread, -counts))[0])
    return np.asarray(close[centre], bool)
