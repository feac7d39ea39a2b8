"""swap_engine.embed: same person close, different people far; grouping and majority on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from swap_engine.embed import SAME_PERSON, FaceEmbedder, distances, group, majority
from swap_engine.landmarks import LandmarkDetector
from swap_engine.media import load_image


@pytest.fixture(scope="module")
def embedded(landmarker_model: Path, photos: Path) -> dict[str, np.ndarray]:
    embedder = FaceEmbedder()
    out = {}
    with LandmarkDetector(landmarker_model) as det:
        for name in ("obama.jpg", "biden.jpg", "two_people.jpg", "man_curly_glasses.jpg"):
            image = load_image(photos / name, max_pixels=40_000_000)
            out[name] = embedder.embed(image, [f.box for f in det.detect(image)])
    return out


def test_same_person_close_others_far(embedded: dict[str, np.ndarray]) -> None:
    assert embedded["obama.jpg"].shape == (1, 128) and embedded["two_people.jpg"].shape == (2, 128)
    pair = embedded["two_people.jpg"]
    d_obama = distances(embedded["obama.jpg"], pair)[0]
    d_biden = distances(embedded["biden.jpg"], pair)[0]
    # Each portrait matches exactly one face of the two-person photo, and not the other.
    assert sorted([d_obama.min(), d_biden.min()])[1] < SAME_PERSON
    assert d_obama.max() > SAME_PERSON and d_biden.max() > SAME_PERSON
    assert int(d_obama.argmin()) != int(d_biden.argmin())
    assert distances(embedded["obama.jpg"], embedded["man_curly_glasses.jpg"])[0, 0] > SAME_PERSON


def test_group_and_majority(embedded: dict[str, np.ndarray]) -> None:
    obama, biden, pair = embedded["obama.jpg"], embedded["biden.jpg"], embedded["two_people.jpg"]
    curly = embedded["man_curly_glasses.jpg"]
    labels = group([obama, biden, pair[:1], pair[1:], curly])
    assert len(set(labels)) == 3 and labels[0] == 0  # numbered by first appearance
    assert labels[4] not in (labels[0], labels[1])
    faces = np.concatenate([obama, obama + 0.01, obama - 0.01, biden])
    assert majority(faces).tolist() == [True, True, True, False]
    assert majority(obama).tolist() == [True]
    assert group([]) == [] and group([np.zeros((0, 128))]) == [0]


def test_group_never_joins_sets_named_apart() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 128).astype(np.float32)
    b = a + 3.0 / np.sqrt(128)  # a different person, 3 away
    near = [a + rng.normal(0, 0.01, (2, 128)).astype(np.float32) for _ in range(3)] + [b[None]]
    assert group(near) == [0, 0, 0, 1]
    kept = group(near, apart=[(0, 2)])  # 0 and 2 seen at the same time: 1 joins one of them, never both
    assert kept[0] != kept[2] and kept[1] in (kept[0], kept[2]) and len(set(kept)) == 3
    # Many sets (a long clip's tracks): each person's tracks end up together.
    people = rng.normal(0, 1, (10, 128)).astype(np.float32)
    sets = [people[k % 10] + rng.normal(0, 0.02, (3, 128)).astype(np.float32) for k in range(200)]
    labels = group(sets)
    assert labels[:10] == list(range(10)) and labels == [k % 10 for k in range(200)]
