"""Shared fixtures: where the read-only shared media and models are, and a fresh data home per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.config import PATH_VARIABLES, absolute_path

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Start-up, as `famswap` does it: folders given relative to where pytest was started become absolute, so tests
    that run `famswap` in another working folder (and its worker children) still find them."""
    for name in PATH_VARIABLES:
        if os.environ.get(name, "").strip():
            os.environ[name] = absolute_path(os.environ[name], Path.cwd())


def _shared_dir() -> Path:
    # CI and developers have shared/ beside the checkout; FAMSWAP_SHARED_DIR can point elsewhere.
    return Path(os.environ.get("FAMSWAP_SHARED_DIR", REPO.parent / "shared")).resolve()


SHARED = _shared_dir()
MEDIA = SHARED / "media"
PHOTOS = MEDIA / "photos"
CLIPS = MEDIA / "clips"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared media not found at {SHARED} (set FAMSWAP_SHARED_DIR)")
    return SHARED


@pytest.fixture(scope="session")
def photos(shared_dir: Path) -> Path:
    return shared_dir / "media" / "photos"


@pytest.fixture(scope="session")
def clips(shared_dir: Path) -> Path:
    return shared_dir / "media" / "clips"


@pytest.fixture(scope="session")
def model_dir(shared_dir: Path) -> Path:
    return Path(os.environ.get("FAMSWAP_MODEL_DIR", shared_dir / "models")).absolute()


@pytest.fixture(scope="session")
def landmarker_model(model_dir: Path) -> Path:
    path = model_dir / "face_landmarker.task"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="session")
def hair_model(model_dir: Path) -> Path:
    path = model_dir / "hair_segmenter.tflite"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh, empty data home for one test."""
    path = tmp_path / "home"
    path.mkdir()
    return path
