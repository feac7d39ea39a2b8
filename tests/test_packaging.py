"""The Dockerfile, compose file and CI script refer only to things that exist; the layers import one way."""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_dockerfile_copies_existing_paths() -> None:
    copies = [rest for word, rest in _dockerfile_instructions() if word == "COPY"]
    assert copies, "the Dockerfile copies nothing"
    for rest in copies:
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"Dockerfile COPYs {source}, which is not in the repo"


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    instructions = dict(_dockerfile_instructions())
    entry = ast.literal_eval(instructions["ENTRYPOINT"])
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert entry[0] in scripts
    module, func = scripts[entry[0]].split(":")
    tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
    assert func in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    command = ast.literal_eval(instructions["CMD"])
    assert command[0] in {"run", "worker", "doctor"}
    # The model is fetched at build time and its checksum verified.
    run_lines = " ".join(rest for word, rest in _dockerfile_instructions() if word == "RUN")
    assert "sha256sum -c" in run_lines and "face_landmarker.task" in run_lines


def test_dockerfile_installs_one_opencv() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8") + (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert "opencv-python" not in text.replace("opencv-contrib-python", ""), "a second OpenCV wheel would clash"


def test_compose_reserves_a_gpu_and_a_volume() -> None:
    text = (REPO / "compose.yaml").read_text(encoding="utf-8")
    assert "driver: nvidia" in text and "capabilities: [gpu]" in text
    assert re.search(r"^volumes:\n\s+famswap-data:", text, re.M)


def _readme_commands() -> list[str]:
    """The commands of the README's bash blocks, continuation lines joined, runs of spaces made one."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```bash\n(.*?)^```", readme, re.M | re.S)
    return [" ".join(line.split()) for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_ci_runs_the_readme_commands_as_written() -> None:
    ci_lines = [" ".join(line.split()) for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    (test_line,) = [c for c in _readme_commands() if "-m pytest" in c]
    assert test_line in ci_lines, "CI runs the README's test command, not a variant of it"
    assert test_line.startswith("FAMSWAP_MODEL_DIR=../shared/models "), "relative, as a user writes it"
    assert not [line for line in ci_lines if "FAMSWAP_MODEL_DIR" in line and line != test_line]
    (install,) = [c for c in _readme_commands() if "python3 -m venv" in c]
    install_part = install.split(" && .venv/bin/famswap ")[0]
    assert install_part in ci_lines, "CI installs with the README's own line"
    assert "-eq 5" in "\n".join(ci_lines)


OURS = {"common", "famswap", "swap_engine", "storage", "worker", "bot"}


def _modules(package: str) -> set[str]:
    """Every absolute module the package's files import (``a.b`` for ``from a.b import c``), at any depth."""
    found: set[str] = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return found


def _imports(package: str) -> set[str]:
    """The top-level packages that ``package`` imports, itself excluded."""
    return {m.split(".")[0] for m in _modules(package)} - {package}


def test_every_package_is_checked() -> None:
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert packages == OURS, "a new package needs its place in the import rules below"


def test_every_package_is_installed_and_copied_into_the_image() -> None:
    include = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    assert {p.rstrip("*") for p in include["find"]["include"]} == OURS
    copied = {rest.split()[0] for word, rest in _dockerfile_instructions() if word == "COPY"}
    assert OURS <= copied, f"the Dockerfile does not copy {sorted(OURS - copied)}"


def test_the_leaf_imports_nothing_of_ours() -> None:
    assert not _imports("common") & OURS


def test_the_application_is_imported_by_nothing() -> None:
    for package in OURS - {"famswap"}:
        assert "famswap" not in _imports(package), f"{package} imports the application"


def test_imports_flow_one_way() -> None:
    """``common`` ← ``swap_engine`` / ``storage`` ← ``worker`` (engine meets storage) / ``bot`` ← ``famswap``."""
    assert _imports("bot") & OURS <= {"common", "storage"}
    assert not _imports("bot") & {"torch", "cv2", "mediapipe", "numpy"}
    assert _imports("storage") & OURS <= {"common"}
    assert not _imports("storage") & {"torch", "cv2", "mediapipe", "discord"}
    assert _imports("worker") & OURS <= {"common", "storage", "swap_engine"}
    assert "discord" not in _imports("worker")
    # The engine is a library: of ours, only the error tree; never storage, the configuration or Discord.
    engine = _modules("swap_engine")
    assert {m for m in engine if m.split(".")[0] in OURS - {"swap_engine"}} <= {"common.errors"}
    assert not {m.split(".")[0] for m in engine} & {"discord", "aiosqlite"}
