"""One table of the GPU check's figures, read from the results folder that ``benchmarks/gpu_check.sh`` fills.

    python3 benchmarks/gpu_table.py env > results/env.json     # what this machine has (GPU, torch, mediapipe, ffmpeg)
    python3 benchmarks/gpu_table.py table results/              # the table (Markdown, ready for docs/QUALITY.md)

Files read from the results folder, each optional (a part that did not run shows as skipped, with the reason):
``env.json`` (``env`` above), ``model.jsonl`` (``bench_model.py --json-out``: one row per preset and device),
``convert.json`` (``bench_convert.py --json-out``), ``swap.json`` (the ``famswap swap`` report: ``ConvertReport``)
with ``swap_run.json`` (``{"rc": …, "seconds": …}`` written by the script), ``skipped.txt`` (``part<TAB>reason`` lines).
Needs only the standard library (``env`` imports torch and mediapipe if present).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

Row = tuple[str, str, str]  # part, figure, value


def probe_env() -> dict[str, object]:
    """What this machine offers the check: Python, torch and its GPU, mediapipe, ffmpeg."""
    env: dict[str, object] = {"python": sys.version.split()[0]}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        env["torch"] = None
    env["mediapipe"] = _version("mediapipe")
    env["cryptography"] = _version("cryptography")
    env["ffmpeg"] = shutil.which("ffmpeg") or (
        "imageio-ffmpeg" if importlib.util.find_spec("imageio_ffmpeg") is not None else None
    )
    return env


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "present"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def skipped(results: Path) -> dict[str, str]:
    """part → why it did not run, from ``skipped.txt``."""
    reasons: dict[str, str] = {}
    try:
        lines = (results / "skipped.txt").read_text(encoding="utf-8").splitlines()
    except OSError:
        return reasons
    for line in lines:
        part, _, reason = line.partition("\t")
        if part.strip():
            reasons[part.strip()] = reason.strip() or "skipped"
    return reasons


def env_rows(env: dict | None) -> list[Row]:
    if env is None:
        return [("machine", "environment", "- (no env.json)")]
    gpu = env.get("gpu") or "no CUDA GPU"
    return [
        ("machine", "GPU", str(gpu)),
        ("machine", "python / torch / CUDA", f"{env.get('python')} / {env.get('torch')} / {env.get('cuda') or '-'}"),
        ("machine", "mediapipe / ffmpeg", f"{env.get('mediapipe') or 'missing'} / {env.get('ffmpeg') or 'missing'}"),
    ]


def model_rows(results: Path, reasons: dict[str, str]) -> list[Row]:
    rows: list[Row] = []
    path = results / "model.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            name = f"train {r['model']} (w {r['width']:g}, {r['size']}->{r['out']} px), {r['device']} {r['precision']}"
            mfu = f", MFU {100 * r['mfu']:.1f} %" if r.get("mfu") is not None else ""
            rows.append(("bench_model", name, f"{r['samples_s']:.0f} samples/s, {r['tflops']:.3g} TFLOP/s{mfu}"))
    if not rows:
        rows.append(("bench_model", "training throughput", f"- ({reasons.get('model', 'no model.jsonl')})"))
    return rows


def convert_rows(results: Path, reasons: dict[str, str]) -> list[Row]:
    c = _read_json(results / "convert.json")
    if c is None:
        return [("bench_convert", "conversion speed", f"- ({reasons.get('convert', 'no convert.json')})")]
    n, bare = c["frames"], c["bare_fps"]
    t = c.get("timings", {})

    def ms(key: str) -> str:
        return f"{1000 * t[key] / n:.1f}" if key in t else "-"

    def fps(key: str) -> str:
        value = c.get(key)
        return "- (scan read from a file)" if value is None else f"{value:.1f} fps ({100 * value / bare:.0f} % of bare)"

    what = f"{c['clip']}, {c['model']} on {c.get('device', 'cpu')}, hair {'on' if c.get('hair') else 'off'}"
    return [
        ("bench_convert", f"bare ffmpeg transcode ({what})", f"{bare:.1f} fps"),
        ("bench_convert", "convert", fps("convert_fps")),
        ("bench_convert", "scan + convert", fps("scan_convert_fps")),
        ("bench_convert", "per frame: hair / model / blend / hair wait (ms)",
         f"{ms('hair')} / {ms('model')} / {ms('blend')} / {ms('hair_wait')}"),
    ]  # fmt: skip


def swap_rows(results: Path, reasons: dict[str, str]) -> list[Row]:
    run = _read_json(results / "swap_run.json")
    report = _read_json(results / "swap.json")
    if run is None:
        return [("famswap swap", "full swap", f"- ({reasons.get('swap', 'did not run')})")]
    if run.get("rc") != 0 or report is None:
        return [("famswap swap", "full swap", f"FAILED (exit {run.get('rc')}, see swap.log)")]
    t = report.get("timings", {})
    convert_s = t.get("total")
    fps = f", convert {report['frames'] / convert_s:.1f} fps" if convert_s else ""
    return [
        ("famswap swap", f"full swap ({run.get('what', 'hires')})", f"{run['seconds']:.0f} s end to end{fps}"),
        ("famswap swap", "frames swapped / written", f"{report['swapped']} / {report['frames']}, {report['bytes'] / 1e6:.1f} MB"),
    ]  # fmt: skip


def table(results: Path) -> str:
    """The Markdown table of everything in ``results``."""
    reasons = skipped(results)
    rows = env_rows(_read_json(results / "env.json"))
    rows += model_rows(results, reasons) + convert_rows(results, reasons) + swap_rows(results, reasons)
    widths = [max(len(r[i]) for r in [("part", "figure", "value"), *rows]) for i in range(3)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(("part", "figure", "value"), widths, strict=True)) + " |"]
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("env", help="print what this machine has, as JSON")
    show = sub.add_parser("table", help="print the table of a results folder")
    show.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    if args.command == "env":
        print(json.dumps(probe_env()))
    else:
        print(table(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
