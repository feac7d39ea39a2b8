"""Training throughput of each model preset and width: samples/s, GFLOPs per sample, achieved TFLOP/s and MFU.

One training step is the Trainer's real step (augmentation on the device, encoder, two decoders, SSIM+L1 loss,
backward, Adam) with ``--batch`` faces per identity and two identities, on random faces. Training FLOPs are
taken as 3x the forward FLOPs (forward + two for backward). samples/s is from the median step (TFLOP/s and MFU
too), "best" from the fastest step: close to what an idle machine gives when others share the CPU. Runs on the
CPU and, when present, on CUDA with bf16 autocast and channels-last. Needs torch and numpy only (no mediapipe,
no OpenCV).

    .venv/bin/python benchmarks/bench_model.py      # all presets, widths 1 0.5 0.25: ~1-2 min on 2 cores (the
                                                    # configs whose step would pass --max-step-seconds are skipped)
    .venv/bin/python benchmarks/bench_model.py --models lite --widths 0.25 0.375 0.5 --seconds 5
    .venv/bin/python benchmarks/bench_model.py --models lite --widths 0.25 --out-scales 1 2 --batch 8 --threads 1
    python3 benchmarks/bench_model.py --models original hires --widths 1 --devices cuda --json-out rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swap_engine.augment import AugmentConfig, augment_batch  # noqa: E402
from swap_engine.model import FaceBank, model_config, model_flops, param_count  # noqa: E402
from swap_engine.train import TrainConfig, Trainer, TrainSet  # noqa: E402

# Dense bf16 peaks (TFLOP/s) of GPUs we may run on; MFU is printed only for these.
PEAK_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():
        if key in name:
            return peak
    return None


def fake_set(n: int, size: int, rng: np.random.Generator) -> TrainSet:
    crops = (rng.random((n, size, size, 3)) * 255).astype(np.uint8)
    ones = np.ones((n, size, size), np.float32)
    return TrainSet(crops, ones, ones.copy())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def config(name: str, width: float, out_scale: int | None) -> object:
    """A preset at ``width``, with ``out_scale`` (None: the preset's)."""
    cfg = model_config(name, width=width)
    return cfg if out_scale is None else replace(cfg, out_scale=out_scale)


def bench_one(
    name: str, width: float, device: torch.device, batch: int, seconds: float, compile_: bool,
    out_scale: int | None = None,
) -> dict:
    cfg = config(name, width, out_scale)
    rng = np.random.default_rng(0)
    data = {k: fake_set(64, cfg.out_size, rng) for k in ("a", "b")}
    bank = FaceBank(cfg, ["a", "b"])
    with tempfile.TemporaryDirectory() as tmp:
        tcfg = TrainConfig(batch=batch, device=str(device), compile=compile_)
        trainer = Trainer(bank, data, tcfg, Path(tmp) / "bench.ckpt", resume=False)
        warmup = 3 if device.type == "cuda" else 1
        for _ in range(warmup):
            trainer._train_step(batch)
        sync(device)
        times: list[float] = []
        start = time.perf_counter()
        while not times or (time.perf_counter() - start < seconds and len(times) < 200):
            t0 = time.perf_counter()
            trainer._train_step(batch)
            sync(device)
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    flops = model_flops(cfg)
    sps = 2 * batch / step
    best = 2 * batch / min(times)  # the fastest step: what an idle machine gives when others share the CPU
    tflops = sps * 3 * flops / 1e12
    peak = peak_tflops(device)
    return {
        "model": name,
        "width": width,
        "size": cfg.size,
        "out": cfg.out_size,
        "params_m": param_count(bank.encoder) / 1e6 + param_count(bank.decoder("a")) / 1e6,
        "gflops": flops / 1e9,
        "samples_s": sps,
        "best_s": best,
        "tflops": tflops,
        "mfu": tflops / peak if peak else None,
        "steps": len(times),
    }


def bench_augment(device: torch.device, size: int, batch: int, repeats: int = 10) -> float:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, device=device)
    maps = torch.rand(batch, 2, size, size, device=device)
    augment_batch(x, maps, AugmentConfig(), gen)
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        augment_batch(x, maps, AugmentConfig(), gen)
        sync(device)
        times.append(time.perf_counter() - t0)
    return batch / min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["original", "hires", "lite"])
    parser.add_argument("--widths", nargs="+", type=float, default=[1.0, 0.5, 0.25])
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="timed seconds per config (at least one step)"
    )
    parser.add_argument("--out-scales", nargs="+", type=int, default=[None],
                        help="decoder output scales to try (default: each preset's own)")
    parser.add_argument("--batch", type=int, default=16, help="faces per identity per step (two identities)")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when present")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the modules (GPU runs)")
    parser.add_argument("--json-out", type=Path, default=None,
                        help="also append each row to this file as one JSON line (benchmarks/gpu_table.py reads it)")
    parser.add_argument(
        "--max-step-seconds",
        type=float,
        default=15.0,
        help="skip a config whose step would take longer, judged by the FLOP rate of the smaller ones (0: no limit)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch} x 2 identities"
    )
    for dev_name in devices:
        device = torch.device(dev_name)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        precision = "bf16 autocast, channels-last" if device.type == "cuda" else "fp32"
        print(f"\n== {label} ({precision})")
        print(
            f"augmentation alone: {bench_augment(device, 64, 64):,.0f} samples/s at 64 px, "
            f"{bench_augment(device, 128, 32):,.0f} at 128 px"
        )
        print(
            f"{'model':9} {'width':>5} {'size':>4} {'out':>4} {'params M':>8} {'GFLOP/smp':>9} {'samples/s':>10} {'best':>7} "
            f"{'TFLOP/s':>8} {'MFU':>6} {'steps':>5}"
        )
        # Smallest first, so the FLOP rate measured so far predicts whether a big config fits the time.
        configs = sorted(
            ((n, w, o) for n in args.models for w in args.widths for o in args.out_scales),
            key=lambda c: model_flops(config(*c)),
        )
        rate = 0.0  # best training FLOP/s so far
        for name, width, out_scale in configs:
            step_flops = 3 * model_flops(config(name, width, out_scale)) * 2 * args.batch
            if args.max_step_seconds and rate and step_flops / rate > args.max_step_seconds:
                print(
                    f"{name:9} {width:5.3g}  skipped: about {step_flops / rate:.0f} s a step (--max-step-seconds)"
                )
                continue
            r = bench_one(name, width, device, args.batch, args.seconds, args.compile, out_scale)
            rate = max(rate, r["tflops"] * 1e12)
            if args.json_out is not None:
                row = {**r, "device": device.type, "precision": "bf16" if device.type == "cuda" else "fp32"}
                with args.json_out.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
            mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "     -"
            print(
                f"{r['model']:9} {r['width']:5.3g} {r['size']:4d} {r['out']:4d} {r['params_m']:8.1f} {r['gflops']:9.3f} "
                f"{r['samples_s']:10.1f} {r['best_s']:7.1f} {r['tflops']:8.3f} {mfu:>6} {r['steps']:5d}",
                flush=True,
            )


if __name__ == "__main__":
    main()
