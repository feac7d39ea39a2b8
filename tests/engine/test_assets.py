"""assets: the face model is verified, never used when corrupt, and downloaded atomically (from loopback only)."""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.errors import ModelFileError
from swap_engine import assets
from swap_engine.assets import LANDMARKER_FILE, LANDMARKER_SHA256, landmarker_path, verify_file


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Path], str]]:
    """Start a loopback HTTP server on a folder; yields a function folder -> base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The socket is closed again: nothing listens there, so connecting is refused at once.
    return f"http://127.0.0.1:{port}/{LANDMARKER_FILE}"


def test_present_and_good_is_returned_without_network(model_dir: Path, landmarker_model: Path) -> None:
    path = landmarker_path(model_dir, download=False, url=_closed_port_url())
    assert path == landmarker_model
    assert verify_file(path, LANDMARKER_SHA256)
    # The second call trusts the cached verification (same size and mtime) and still returns the same path.
    assert landmarker_path(model_dir, download=False) == path


def test_present_but_corrupt_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / LANDMARKER_FILE
    bad.write_bytes(b"not a model at all" * 1000)
    with pytest.raises(ModelFileError) as info:
        landmarker_path(tmp_path, url=_closed_port_url())
    text = info.value.user_text()
    assert str(bad) in text and "Delete it" in text and assets.OFFICIAL_URL in text
    assert bad.read_bytes().startswith(b"not a model")  # never overwritten behind the user's back
    assert not verify_file(bad, LANDMARKER_SHA256)


def test_cached_verification_notices_a_replaced_file(tmp_path: Path, landmarker_model: Path) -> None:
    target = tmp_path / LANDMARKER_FILE
    shutil.copyfile(landmarker_model, target)
    assert landmarker_path(tmp_path, download=False) == target
    target.write_bytes(b"x" * 10)
    with pytest.raises(ModelFileError):
        landmarker_path(tmp_path, download=False)


def test_absent_and_offline_names_url_and_env_var(tmp_path: Path) -> None:
    url = _closed_port_url()
    with pytest.raises(ModelFileError) as info:
        landmarker_path(tmp_path / "models", url=url, progress=False)
    text = info.value.user_text()
    assert url in text and "FAMSWAP_MODEL_DIR" in text and assets.OFFICIAL_URL in text
    assert not (tmp_path / "models" / LANDMARKER_FILE).exists()
    assert list((tmp_path / "models").iterdir()) == []  # no temp file left behind


def test_absent_without_download_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="missing") as info:
        landmarker_path(tmp_path, download=False)
    assert "FAMSWAP_MODEL_DIR" in info.value.user_text()


def test_download_from_local_server(
    tmp_path: Path, landmarker_model: Path, serve: Callable[[Path], str], capsys: pytest.CaptureFixture[str]
) -> None:
    base = serve(landmarker_model.parent)
    target_dir = tmp_path / "models"
    path = landmarker_path(target_dir, url=f"{base}/{LANDMARKER_FILE}", progress=True)
    assert path == target_dir / LANDMARKER_FILE
    assert verify_file(path, LANDMARKER_SHA256)
    assert sorted(p.name for p in target_dir.iterdir()) == [LANDMARKER_FILE]
    assert "100%" in capsys.readouterr().err


def test_download_of_wrong_bytes_is_discarded(tmp_path: Path, serve: Callable[[Path], str]) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / LANDMARKER_FILE).write_bytes(b"\0" * 4096)
    target_dir = tmp_path / "models"
    with pytest.raises(ModelFileError, match="wrong SHA-256"):
        landmarker_path(target_dir, url=f"{serve(served)}/{LANDMARKER_FILE}", progress=False)
    assert list(target_dir.iterdir()) == []


def test_http_error_is_a_model_file_error(tmp_path: Path, serve: Callable[[Path], str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFileError, match="Could not download"):
        landmarker_path(tmp_path / "models", url=f"{serve(empty)}/{LANDMARKER_FILE}", progress=False)


def test_hair_segmenter_is_fetched_and_checked_like_the_landmarker(
    tmp_path: Path, hair_model: Path, serve: Callable[[Path], str], capsys: pytest.CaptureFixture[str]
) -> None:
    from swap_engine.assets import HAIR_SEGMENTER, hair_segmenter_path

    assert hair_segmenter_path(hair_model.parent, download=False) == hair_model
    base = serve(hair_model.parent)
    target_dir = tmp_path / "models"
    path = hair_segmenter_path(target_dir, url=f"{base}/{HAIR_SEGMENTER.file}", progress=True)
    assert path == target_dir / "hair_segmenter.tflite" and verify_file(path, HAIR_SEGMENTER.sha256)
    assert "Downloading hair_segmenter.tflite" in capsys.readouterr().err
    # Another file under its name is refused, and the message names the hair model and its official address.
    path.write_bytes(b"\0" * 1000)
    with pytest.raises(ModelFileError, match="expected hair model") as info:
        hair_segmenter_path(target_dir, download=False)
    assert HAIR_SEGMENTER.url in info.value.user_text()
