"""swap_engine.native_log: MediaPipe's C++ start-up lines stay off stderr; errors and other text still reach it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from swap_engine.native_log import filter_chatter, is_chatter

REPO = Path(__file__).resolve().parents[2]

# Lines as MediaPipe 1.2 printed them on this project's machines.
CHATTER = [
    b"WARNING: Logging before InitGoogle() is written to STDERR\n",
    b"W0000 00:00:1796141812.561308   31380 face_landmarker_graph.cc:181] Sets FaceBlendshapesGraph acceleration to "
    b"xnnpack by default.\n",
    b"I0000 00:00:1796141812.582083   31385 inference_feedback_manager.cc:121] Feedback manager requires a model.\n",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
]
KEPT = [
    b"E0000 00:00:1796141812.600676   31384 calculator_graph.cc:928] INTERNAL: could not open the model\n",
    b"F0000 00:00:1796141812.600676   31384 status.cc:12] Check failed: ok\n",
    b"Traceback (most recent call last):\n",
    b"RuntimeError: Unable to open zip archive.\n",
    b"WARNING: something a user should see\n",
]


def test_chatter_is_told_from_errors() -> None:
    assert all(is_chatter(line) for line in CHATTER)
    assert not any(is_chatter(line) for line in KEPT)
    kept, dropped = filter_chatter(
        b"".join(line for pair in zip(CHATTER, KEPT[: len(CHATTER)], strict=True) for line in pair)
    )
    assert kept == b"".join(KEPT[: len(CHATTER)])
    assert dropped == CHATTER


def test_mediapipe_start_up_lines_stay_off_stderr_and_errors_get_through(
    landmarker_model: Path, hair_model: Path, photos: Path, tmp_path: Path
) -> None:
    photo = next(p for p in sorted(photos.rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    bad_model = tmp_path / "broken.task"
    bad_model.write_bytes(b"not a model" * 100)
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from swap_engine.landmarks import LandmarkDetector
        from swap_engine.media import load_image
        from swap_engine.native_log import quiet_native_stderr
        from swap_engine.segment import HairSegmenter

        image = load_image(Path({str(photo)!r}), max_pixels=50_000_000)
        with LandmarkDetector(Path({str(landmarker_model)!r}), video=True) as detector:
            print("faces", len(detector.detect(image)), file=sys.stderr)
        with HairSegmenter(Path({str(hair_model)!r})) as segmenter:
            segmenter.hair(image[:256, :256].copy())
        with quiet_native_stderr():
            with quiet_native_stderr():  # nested: only the outer one restores fd 2
                os.write(2, {KEPT[0]!r})
                os.write(2, {CHATTER[1]!r})
            print("python text inside", file=sys.stderr)
        os.write(2, b"after the block\\n")
        try:
            LandmarkDetector(Path({str(bad_model)!r}))
        except Exception as exc:
            print("error:", exc, file=sys.stderr)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env, timeout=300)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0, err
    assert "faces 1" in err
    assert "W0000" not in err and "I0000" not in err and "InitGoogle" not in err, err
    assert "face_landmarker_graph.cc" not in err and "inference_feedback_manager" not in err, err
    # A real error line written by native code inside the block, Python's own text and later text all get through,
    # in order; so does MediaPipe's error for a broken model.
    lines = err.splitlines()
    order = [KEPT[0].decode().strip(), "python text inside", "after the block"]
    assert [line for line in lines if line in order] == order, err
    assert any(line.startswith("error:") and "zip archive" in line for line in lines), err
