"""What the Docker image will contain, read from the Dockerfile (no image can be built here): for each variant
its base and Python, where its ffmpeg comes from, the models and their checksums, the user and the volumes."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from swap_engine.assets import MODEL_FILES

REPO = Path(__file__).resolve().parents[1]
# Pythons of the base images, from their published contents (pytorch/pytorch 2.5.1 images: Python 3.11.10).
# A new base must be added here after checking its Python, or this test fails.
KNOWN_BASES = {
    "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime": (3, 11),
    "python:3.11-slim-bookworm": (3, 11),
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped (as Docker does)."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and pending):
            continue  # Docker drops comment lines, also inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            lines.append(line)
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "FROM":
            parts = rest.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None))
        elif not stages and word == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append((word, rest))
    return args, stages


@dataclass
class Image:
    """The final image of one variant: its external base and every instruction from there on, in order."""

    base: str
    instructions: list[tuple[str, str]]

    def all(self, word: str) -> list[str]:
        return [rest for w, rest in self.instructions if w == word]

    def env(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for rest in self.all("ENV"):
            found.update(dict(part.split("=", 1) for part in shlex.split(rest)))
        return found


def image(variant: str | None = None) -> Image:
    """Follow ``FROM`` from the last stage back to an external image, with ``--build-arg VARIANT=variant``."""
    args, stages = parse_dockerfile((REPO / "Dockerfile").read_text(encoding="utf-8"))
    if variant is not None:
        args["VARIANT"] = variant
    by_name = {stage.name: stage for stage in stages if stage.name}
    chain = [stages[-1]]
    while True:
        base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], chain[0].base)
        if base not in by_name:
            break
        chain.insert(0, by_name[base])
    return Image(base, [ins for stage in chain for ins in stage.instructions])


def _requires_python() -> tuple[int, int]:
    spec = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)", spec)
    assert match, spec
    return int(match.group(1)), int(match.group(2))


def test_variants_and_their_bases() -> None:
    default, cuda, cpu = image(), image("cuda"), image("cpu")

    assert default == cuda, "the GPU image is the default"
    assert cuda.base == "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
    assert cpu.base == "python:3.11-slim-bookworm"
    cpu_torch = [r for r in cpu.all("RUN") if "torch==" in r]
    assert len(cpu_torch) == 1 and "--index-url https://download.pytorch.org/whl/cpu" in cpu_torch[0]
    assert not [r for r in cuda.all("RUN") if "torch==" in r], "the CUDA base brings its own torch"
    # Past the base, both variants are built by the same instructions.
    assert cpu.instructions[len(cpu.instructions) - len(cuda.instructions):] == cuda.instructions
    _, stages = parse_dockerfile((REPO / "Dockerfile").read_text(encoding="utf-8"))
    assert [s.name for s in stages if s.name] == ["base-cuda", "base-cpu"], "VARIANT is cuda or cpu"


@pytest.mark.parametrize("variant", ["cuda", "cpu"])
def test_python_is_one_famswap_supports(variant: str) -> None:
    built = image(variant)
    needed = _requires_python()

    assert KNOWN_BASES[built.base] >= needed
    checks = [r for r in built.all("RUN") if "sys.version_info >=" in r]
    assert len(checks) == 1 and f"sys.version_info >= {needed}" in checks[0], "the build refuses an older Python"


@pytest.mark.parametrize("variant", ["cuda", "cpu"])
def test_ffmpeg_is_the_bundled_one_checked_at_build_time(variant: str) -> None:
    built = image(variant)
    runs = built.all("RUN")

    for run in runs:
        installed = re.findall(r"apt-get install ([^&|;]*)", run)
        assert not any("ffmpeg" in packages.split() for packages in installed), run
    assert any('t.source == "bundled"' in r and "unusable_because(t) is None" in r for r in runs)
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert any(d.startswith("imageio-ffmpeg") for d in dependencies)
    install = runs.index("pip install .")
    check = next(i for i, r in enumerate(runs) if "find_ffmpeg" in r)
    assert install < check, "the check runs on the installed package"


def _official_urls(shared_dir: Path) -> dict[str, str]:
    """File name → official address, from the shared models' README."""
    text = (shared_dir / "models" / "README.md").read_text(encoding="utf-8")
    return {url.rsplit("/", 1)[1]: url for url in re.findall(r"Official address: (https://\S+)", text)}


@pytest.mark.parametrize("variant", ["cuda", "cpu"])
def test_models_are_fetched_from_their_official_address_and_checked(variant: str, shared_dir: Path) -> None:
    built = image(variant)
    model_dir = built.env()["FAMSWAP_MODEL_DIR"]
    published = dict(
        reversed(line.split()) for line in (shared_dir / "models" / "SHA256SUMS").read_text().splitlines() if line
    )
    urls = _official_urls(shared_dir)
    assert {m.file for m in MODEL_FILES} == {"face_landmarker.task", "hair_segmenter.tflite"}

    (fetch,) = [r for r in built.all("RUN") if "curl -fsSL" in r]
    words = shlex.split(fetch)
    for spec in MODEL_FILES:  # what the engine itself fetches and verifies
        assert (spec.url, spec.sha256) == (urls[spec.file], published[spec.file]), f"{spec.file}: engine vs shared"
        path = f"{model_dir}/{spec.file}"
        at = words.index(path)
        assert words[at - 1] == "-o" and words[at + 1] == spec.url, f"{spec.file} comes from {spec.url}"
        # In the same RUN, so a wrong or truncated download fails the build.
        assert f"{spec.sha256} {path}" in " ".join(words), f"{spec.file} is checked against {spec.sha256}"
    assert "sha256sum -c -" in fetch


@pytest.mark.parametrize("variant", ["cuda", "cpu"])
def test_runs_as_an_unprivileged_user_with_data_and_key_in_volumes(variant: str) -> None:
    built = image(variant)
    env = built.env()

    (user,) = built.all("USER")
    assert user not in ("root", "0")
    (created,) = [r for r in built.all("RUN") if "useradd" in r]
    assert f"--uid 10001 {user}" in created and f"chown {user}:{user} /data /keys" in created
    assert built.instructions.index(("USER", user)) > max(
        i for i, (word, _) in enumerate(built.instructions) if word == "RUN"
    ), "nothing runs as root after the switch"
    (volumes,) = built.all("VOLUME")
    assert json.loads(volumes) == ["/data", "/keys"]
    assert env["FAMSWAP_HOME"] == "/data" and Path(env["FAMSWAP_KEY_FILE"]).parent == Path("/keys")
    assert not env["FAMSWAP_MODEL_DIR"].startswith(("/data", "/keys")), "a volume would hide the baked-in models"


@pytest.mark.parametrize(("compose", "variant"), [("compose.yaml", None), ("compose.cpu.yaml", "cpu")])
def test_compose_files_build_their_variant_and_mount_the_volumes(compose: str, variant: str | None) -> None:
    text = (REPO / compose).read_text(encoding="utf-8")

    assert re.findall(r"^\s+- famswap-(\w+):(/\S+)$", text, re.M) == [("data", "/data"), ("keys", "/keys")]
    if variant is None:
        assert "driver: nvidia" in text and "VARIANT" not in text
    else:
        assert re.search(rf"^\s+VARIANT: {variant}$", text, re.M) and "nvidia" not in text
        assert f"--build-arg VARIANT={variant}" in (REPO / "Dockerfile").read_text(encoding="utf-8")
