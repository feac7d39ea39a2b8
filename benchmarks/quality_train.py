"""How good does a model get in N minutes? Train on two real people and score reconstruction on held-out faces.

Builds (once, cached) face sets of ``selfie_woman_expressive.mp4`` and ``selfie_man.mp4`` with
``swap_engine.faceset.build_faceset``, holds out every 6th face in frame order, trains the two decoders and the
shared encoder together, and at each mark prints, per identity, the held-out reconstruction L1 (0-1 scale) and
SSIM inside the face mask, the training loss and the throughput. A preview PNG of held-out faces is written at
each mark (rows: woman, woman->woman, woman->man, man, man->man, man->woman).

    .venv/bin/python benchmarks/quality_train.py --minutes 1            # the figure in the issue note
    .venv/bin/python benchmarks/quality_train.py --minutes 1 5 15       # long
    .venv/bin/python benchmarks/quality_train.py --steps 200 600 --lr 1e-4   # compare settings by steps (busy CPU)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swap_engine.losses import ssim_map  # noqa: E402
from swap_engine.model import FaceBank, model_config, model_flops  # noqa: E402
from swap_engine.train import Progress, TrainConfig, Trainer, TrainSet, make_trainset  # noqa: E402

SHARED = Path(os.environ.get("FAMSWAP_SHARED_DIR", REPO.parent / "shared"))
CLIPS = {"woman": "selfie_woman_expressive.mp4", "man": "selfie_man.mp4"}
HOLD_OUT_EVERY = 6
# Denser than build_faceset's default (1.0) so the man's fairly still 7 s clip gives enough faces to hold some out.
MIN_DISTANCE = 0.5


def face_sets(cache: Path, size: int) -> dict[str, tuple[TrainSet, TrainSet]]:
    """(train, held-out) TrainSets at ``size`` per identity, from face sets built once into ``cache``."""
    from swap_engine.faceset import build_faceset, load_faceset

    detector = Path(os.environ.get("FAMSWAP_MODEL_DIR", SHARED / "models")) / "face_landmarker.task"
    out = {}
    for ident, clip in CLIPS.items():
        folder = cache / f"{ident}-d{MIN_DISTANCE:g}"
        if not (folder / "faceset.json").exists():
            t0 = time.perf_counter()
            report = build_faceset(
                [SHARED / "media" / "clips" / clip], folder, detector, min_distance=MIN_DISTANCE
            )
            print(f"built {folder} in {time.perf_counter() - t0:.0f} s: {report.summary().splitlines()[0]}")
        fs = load_faceset(folder)
        order = np.argsort([r.frame or 0 for r in fs.records], kind="stable")
        held = order[HOLD_OUT_EVERY // 2 :: HOLD_OUT_EVERY]
        train = np.setdiff1d(order, held)
        out[ident] = (
            make_trainset(fs.crops[train], fs.points[train], size),
            make_trainset(fs.crops[held], fs.points[held], size),
        )
    return out


@torch.no_grad()
def evaluate(bank: FaceBank, held: dict[str, TrainSet]) -> dict[str, tuple[float, float]]:
    """Per identity: (L1, SSIM) of its own decoder's reconstruction of its held-out faces, inside the face mask."""
    device = next(bank.parameters()).device
    was_training = bank.training
    bank.eval()
    scores = {}
    for ident, ts in held.items():
        x = torch.from_numpy(ts.crops).to(device).permute(0, 3, 1, 2).float() / 255  # (N, 3, S, S)
        mask = torch.from_numpy(ts.masks).to(device)[:, None]  # (N, 1, S, S)
        rgb = bank(x, ident)[0].float()
        l1 = ((rgb - x).abs().mean(1, keepdim=True) * mask).sum() / mask.sum()
        ssim = (ssim_map(rgb, x) * mask).sum() / mask.sum()
        scores[ident] = (float(l1), float(ssim))
    bank.train(was_training)
    return scores


@torch.no_grad()
def preview(bank: FaceBank, held: dict[str, TrainSet], path: Path, faces: int = 8) -> None:
    import cv2

    device = next(bank.parameters()).device
    ids = list(held)
    rows = []
    for n, src in enumerate(ids):
        pick = np.linspace(0, len(held[src]) - 1, min(faces, len(held[src]))).round().astype(int)
        x = torch.from_numpy(held[src].crops[pick]).to(device).permute(0, 3, 1, 2).float() / 255
        rows.append(x)
        rows += [bank(x, dst)[0].float() for dst in ids[n:] + ids[:n]]
    width = max(len(r) for r in rows)
    rows = [torch.cat([r, r.new_zeros((width - len(r), *r.shape[1:]))]) for r in rows]  # pad short rows
    grid = torch.cat([torch.cat(list(r), 2) for r in rows], 1)  # (3, R*S, C*S)
    img = (grid.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).cpu().numpy()
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    marks = parser.add_mutually_exclusive_group()
    marks.add_argument("--minutes", nargs="+", type=float, help="wall-clock marks (default 1 5 15)")
    marks.add_argument("--steps", nargs="+", type=int, help="step marks instead of minutes")
    parser.add_argument("--model", default="lite")
    parser.add_argument("--width", type=float, default=None)
    parser.add_argument(
        "--size", type=int, default=None, help="override the preset's size (a multiple of 16)"
    )
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch", type=int, default=None, help="faces per identity per step")
    parser.add_argument(
        "--decay-from", type=float, default=None, help="TrainConfig.decay_from (default: its own)"
    )
    parser.add_argument("--no-decay", action="store_true", help="constant learning rate")
    parser.add_argument("--warp-until", type=float, default=None, help="TrainConfig.warp_until")
    parser.add_argument("--warp", type=float, default=None, help="AugmentConfig.warp (default: its own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--cache", type=Path, default=Path("/tmp/famswap-quality"), help="face sets are built here"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="previews and checkpoint (default: under --cache)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = model_config(args.model, width=args.width)
    if args.size:
        cfg = replace(cfg, size=args.size)
    defaults = TrainConfig()
    tcfg = replace(
        defaults,
        lr=args.lr or defaults.lr,
        batch=args.batch or defaults.batch,
        decay_from=None if args.no_decay else (args.decay_from or defaults.decay_from),
        seed=args.seed,
        device=args.device,
        warp_until=args.warp_until,
        augment=defaults.augment if args.warp is None else replace(defaults.augment, warp=args.warp),
        plateau_patience=None,
        checkpoint_every_s=None,
        preview_every_s=None,
        budget_seconds=None,
        max_steps=None,
    )
    by_steps = args.steps is not None
    todo = sorted(args.steps) if by_steps else sorted(args.minutes or [1.0, 5.0, 15.0])
    if by_steps:
        tcfg = replace(tcfg, max_steps=todo[-1])
    else:
        tcfg = replace(tcfg, budget_seconds=60.0 * todo[-1])

    sets = face_sets(args.cache, cfg.size)
    train = {k: v[0] for k, v in sets.items()}
    held = {k: v[1] for k, v in sets.items()}
    out = (
        args.out
        or args.cache
        / "runs"
        / f"{cfg.name}-w{cfg.width:g}-s{cfg.size}-lr{tcfg.lr:g}-b{tcfg.batch or 'auto'}-warp{tcfg.augment.warp:g}-until{tcfg.warp_until}"
    )
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    bank = FaceBank(cfg, list(train))
    trainer = Trainer(bank, train, tcfg, out / "train.ckpt", resume=False)
    print(
        f"{cfg.name} width {cfg.width:g} size {cfg.size} ({model_flops(cfg) / 1e9:.3f} GFLOP/sample), "
        f"lr {tcfg.lr:g} (decay from {tcfg.decay_from}), batch {trainer.batch} x 2, {torch.get_num_threads()} threads; "
        f"train {', '.join(f'{k} {len(v)}' for k, v in train.items())}; "
        f"held out {', '.join(f'{k} {len(v)}' for k, v in held.items())}"
    )
    header = f"{'min':>5} {'step':>6} {'smp/s':>6} {'loss':>6}" + "".join(
        f" {k + ' L1':>9} {k + ' SSIM':>10}" for k in held
    )
    print(header)
    pending = list(todo)

    def report(step: int, elapsed: float, loss: float) -> None:
        scores = evaluate(bank, held)
        sps = step * trainer.batch * len(train) / max(elapsed, 1e-9)  # mean since the start
        row = f"{elapsed / 60:5.2f} {step:6d} {sps:6.0f} {loss:6.4f}"
        row += "".join(f" {l1:9.4f} {ssim:10.4f}" for l1, ssim in scores.values())
        print(row, flush=True)
        preview(bank, held, out / f"preview-{step:06d}.png")

    def on_progress(p: Progress) -> None:
        reached = p.step if by_steps else p.elapsed_s / 60
        while pending and reached >= pending[0] and (len(pending) > 1):
            pending.pop(0)
            report(p.step, p.elapsed_s, p.losses["total"])

    result = trainer.run(on_progress)
    report(result.step, result.elapsed_s, result.losses["total"])
    curve = [h for i, h in enumerate(result.history) if i % max(1, len(result.history) // 12) == 0]
    print("loss curve (step, s, loss): " + ", ".join(f"({s}, {t:.0f}, {v:.4f})" for s, t, v in curve))
    print(f"previews in {out}")


if __name__ == "__main__":
    main()
