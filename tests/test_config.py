"""Settings: defaults that work out of the box, .env files, and bad values named by their variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import DISCORD_API_DEFAULT, Settings, read_env_file
from common.errors import ConfigError, MissingToken


def test_defaults_need_no_environment(tmp_path: Path) -> None:
    s = Settings.load({}, env_file=tmp_path / "absent.env")
    assert s.device == "auto"
    assert s.discord_token == ""
    assert s.discord_api == DISCORD_API_DEFAULT
    assert s.home.name == "famswap"
    assert s.models_path == s.home / "models"
    assert s.database_path.parent == s.home
    assert s.max_upload_bytes == 50 * 1024 * 1024
    # The key is kept outside the data home unless told otherwise.
    assert s.home not in s.key_path.parents


def test_values_are_parsed(tmp_path: Path) -> None:
    env = {
        "FAMSWAP_HOME": str(tmp_path / "h"),
        "FAMSWAP_MODEL_DIR": str(tmp_path / "m"),
        "FAMSWAP_DEVICE": "CUDA:1",
        "FAMSWAP_MAX_UPLOAD_MB": "8",
        "FAMSWAP_MAX_CLIP_SECONDS": "12.5",
        "FAMSWAP_MAX_PHOTOS": "20",
        "FAMSWAP_KEEP_UPLOADS": "yes",
        "FAMSWAP_DISCORD_API": "http://127.0.0.1:5000/api/v10/",
        "DISCORD_TOKEN": " abc ",
    }
    s = Settings.load(env, env_file=tmp_path / "absent.env")
    assert s.home == tmp_path / "h"
    assert s.models_path == tmp_path / "m"
    assert s.device == "cuda:1"
    assert s.max_upload_bytes == 8 * 1024 * 1024
    assert s.max_clip_seconds == 12.5
    assert s.max_photos_per_identity == 20
    assert s.keep_uploads is True
    assert s.discord_api == "http://127.0.0.1:5000/api/v10"
    assert s.require_token() == "abc"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FAMSWAP_DEVICE", "gpu"),
        ("FAMSWAP_MAX_UPLOAD_MB", "lots"),
        ("FAMSWAP_MAX_UPLOAD_MB", "-1"),
        ("FAMSWAP_MAX_PHOTOS", "2.5"),
        ("FAMSWAP_KEEP_UPLOADS", "maybe"),
        ("FAMSWAP_DISCORD_GATEWAY", "not a url"),
        ("FAMSWAP_HOME", "  "),
        ("FAMSWAP_MODEL", "huge"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load({name: value}, env_file=tmp_path / "absent.env")
    assert name in info.value.user_text()


def test_env_file_fills_in_but_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\n\nexport DISCORD_TOKEN='from-file'\nFAMSWAP_DEVICE=cpu\nFAMSWAP_MAX_PHOTOS=\"7\"\n",
        encoding="utf-8",
    )
    s = Settings.load({"FAMSWAP_DEVICE": "cuda"}, env_file=env_file)
    assert s.discord_token == "from-file"
    assert s.device == "cuda"
    assert s.max_photos_per_identity == 7


def test_broken_env_file_line_is_reported(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DISCORD_TOKEN=x\nthis is not a setting\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\.env:2"):
        read_env_file(env_file)


def test_missing_token_says_how_to_set_it(tmp_path: Path) -> None:
    s = Settings.load({}, env_file=tmp_path / "absent.env")
    with pytest.raises(MissingToken) as info:
        s.require_token()
    assert "DISCORD_TOKEN" in info.value.user_text()


def test_training_budget_by_device_and_quality(tmp_path: Path) -> None:
    s = Settings.load(
        {"FAMSWAP_TRAIN_MINUTES_CPU": "10", "FAMSWAP_TRAIN_MINUTES_GPU": "4"}, env_file=tmp_path / "absent.env"
    )
    assert s.train_seconds("cpu") == 600.0  # the default quality is preview
    assert s.train_seconds("cpu", "best") == 1800.0
    assert s.train_seconds("cuda:1", "preview") == 240.0
    best = Settings.load({"FAMSWAP_QUALITY": "best"}, env_file=tmp_path / "absent.env")
    assert best.train_seconds("cuda") == best.train_minutes_gpu * 60 * 3


def test_torch_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.load({"FAMSWAP_TORCH_THREADS": "3"}, env_file=tmp_path / "a").torch_thread_count() == 3
    auto = Settings.load({}, env_file=tmp_path / "a")
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert auto.torch_thread_count() == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert auto.torch_thread_count() is None
    with pytest.raises(ConfigError, match="FAMSWAP_TORCH_THREADS"):
        Settings.load({"FAMSWAP_TORCH_THREADS": "-2"}, env_file=tmp_path / "a")


def test_relative_folders_become_absolute_from_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"FAMSWAP_HOME": "data", "FAMSWAP_MODEL_DIR": "../shared/models", "FAMSWAP_KEY_FILE": "~/k/famswap.key"}

    s = Settings.load(env, env_file=tmp_path / "absent.env")

    assert s.home == tmp_path / "data"
    assert s.models_path == tmp_path.parent / "shared" / "models"  # ".." folded away
    assert s.key_path == Path.home() / "k" / "famswap.key"
    assert s.path_environ() == {
        "FAMSWAP_HOME": str(tmp_path / "data"),
        "FAMSWAP_MODEL_DIR": str(tmp_path.parent / "shared" / "models"),
        "FAMSWAP_KEY_FILE": str(Path.home() / "k" / "famswap.key"),
    }


def test_relative_folders_in_an_env_file_are_taken_from_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text("FAMSWAP_HOME=./data\nFAMSWAP_MODEL_DIR=models\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    s = Settings.load({"FAMSWAP_KEY_FILE": "key"}, env_file=project / ".env")

    assert s.home == project / "data" and s.models_path == project / "models"
    assert s.key_path == elsewhere / "key"  # the environment's own value: from the working folder
    assert set(s.path_environ()) == {"FAMSWAP_HOME", "FAMSWAP_MODEL_DIR", "FAMSWAP_KEY_FILE"}
    assert Settings.load({}, env_file=tmp_path / "absent.env").path_environ().keys() == {"FAMSWAP_HOME"}
