"""benchmarks/gpu_check.sh and gpu_table.py, as far as a machine without a GPU can check them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_table  # noqa: E402


def _write(folder: Path, name: str, data: object) -> None:
    (folder / name).write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")


def test_the_table_shows_every_part_from_its_files(tmp_path: Path) -> None:
    _write(tmp_path, "env.json", {"python": "3.12.3", "torch": "2.11.0", "cuda": "13.0", "gpu": "NVIDIA H200",
                                  "mediapipe": "1.2.3", "ffmpeg": "/tmp/famswap-bin/ffmpeg"})  # fmt: skip
    row = {"model": "hires", "width": 1.0, "size": 128, "out": 256, "samples_s": 2400.0, "tflops": 123.4,
           "mfu": 0.1248, "device": "cuda", "precision": "bf16"}  # fmt: skip
    _write(tmp_path, "model.jsonl", json.dumps(row) + "\n" + json.dumps({**row, "model": "original", "mfu": None}))
    _write(tmp_path, "convert.json", {"clip": "scene.mp4", "frames": 282, "model": "hires", "device": "cuda",
                                      "hair": True, "bare_fps": 100.0, "convert_fps": 55.0, "scan_convert_fps": 36.0,
                                      "timings": {"hair": 2.82, "model": 0.564, "blend": 1.41, "hair_wait": 0.0}})  # fmt: skip
    _write(tmp_path, "swap_run.json", {"rc": 0, "seconds": 201.4, "what": "hires on cuda"})
    _write(tmp_path, "swap.json", {"frames": 282, "swapped": 270, "bytes": 4_200_000, "timings": {"total": 9.4}})
    text = gpu_table.table(tmp_path)
    assert "| machine       | GPU" in text and "NVIDIA H200" in text
    assert "train hires (w 1, 128->256 px), cuda bf16" in text and "2400 samples/s, 123 TFLOP/s, MFU 12.5 %" in text
    assert "train original" in text and "MFU" not in text.split("train original")[1].split("\n")[0]
    assert "55.0 fps (55 % of bare)" in text and "36.0 fps (36 % of bare)" in text
    assert "10.0 / 2.0 / 5.0 / 0.0" in text  # ms per frame: hair / model / blend / hair wait
    assert "201 s end to end, convert 30.0 fps" in text and "270 / 282, 4.2 MB" in text
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1  # one aligned Markdown table


def test_missing_parts_say_why(tmp_path: Path) -> None:
    _write(tmp_path, "skipped.txt", "model\tno CUDA GPU here\nconvert\tno ffmpeg (carry one)\n")
    _write(tmp_path, "swap_run.json", {"rc": 1, "seconds": 3.0})
    text = gpu_table.table(tmp_path)
    assert "- (no env.json)" in text
    assert "- (no CUDA GPU here)" in text and "- (no ffmpeg (carry one))" in text
    assert "FAILED (exit 1, see swap.log)" in text


def _check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHON"] = sys.executable
    return subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--out", str(tmp_path / "res"), *args],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def test_without_a_gpu_every_part_is_skipped_with_its_reason(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = _check(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "model skipped: no CUDA GPU here" in done.stdout
    assert (tmp_path / "res" / "table.md").read_text().count("no CUDA GPU here") == 3


def test_the_cpu_dry_run_measures_the_model_and_prints_the_table(tmp_path: Path, shared_dir: Path) -> None:
    done = _check(tmp_path, "--cpu-dry-run", "--skip", "convert,swap")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in (tmp_path / "res" / "model.jsonl").read_text().splitlines()]
    assert [(r["model"], r["device"], r["precision"]) for r in rows] == [("lite", "cpu", "fp32")]
    assert rows[0]["samples_s"] > 0
    assert "train lite (w 0.25" in done.stdout and "convert skipped: --skip" in done.stdout
