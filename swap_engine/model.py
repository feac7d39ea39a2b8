"""The shared-encoder face-swap autoencoder: one encoder for all faces, one decoder per identity, and its bank file.

Inputs are ``(B, 3, S, S)`` float tensors in ``[0, 1]`` (RGB, S = ``ModelConfig.size``). A decoder returns
``(B, 3, O, O)`` RGB in ``[0, 1]`` and, when the config learns a mask, a ``(B, 1, O, O)`` mask in ``[0, 1]``, where
O = ``ModelConfig.out_size`` = S x ``out_scale``: the encoder needs only enough pixels to read pose and expression,
while the decoder draws the person's face at a resolution closer to the one it is pasted at.
To swap, encode the actor's face and decode it with the family member's decoder.

This file imports only torch. A bank file stores the model arguments and the identity list beside the weights,
so ``load_bank`` needs nothing but the path. Storage keeps a bank in parts instead (one encoder file, one file per
decoder, so forgetting a person deletes exactly their file): ``save_encoder`` / ``save_decoder`` write them and
``bank_from_parts`` puts a bank together again; the one format, split.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    name: str = "original"
    size: int = 64  # input and output side in pixels
    width: float = 1.0  # multiplies every channel count and the dense sizes below
    enc_channels: tuple[int, ...] = (128, 256, 512, 1024)  # 5x5 stride-2 convs, each halves the side
    latent: int = 1024  # the dense bottleneck
    dense_channels: int = 1024  # channels of the small grid the latent is reshaped to
    enc_upscale: int = 512  # the encoder ends with one pixel-shuffle upscale (as in the classic model)
    dec_channels: tuple[int, ...] = (256, 128, 64)  # the decoder's pixel-shuffle upscales
    kernel: int = 5  # kernel of the encoder convs and of the output conv
    learn_mask: bool = False  # a 4th output: where the face is (for blending)
    out_scale: int = 1  # the decoder draws out_scale x size px: one more pixel-shuffle upscale per doubling

    def __post_init__(self) -> None:
        side = self.size
        for _ in self.enc_channels:
            if side % 2:
                raise ValueError(f"size {self.size} does not halve {len(self.enc_channels)} times")
            side //= 2
        out = side * 2 ** (1 + len(self.dec_channels))
        if out != self.size:
            raise ValueError(f"size {self.size}: the decoder would draw {out} px; change enc/dec channels")
        if self.width <= 0:
            raise ValueError("width must be positive")
        if self.out_scale not in (1, 2, 4):
            raise ValueError(f"out_scale must be 1, 2 or 4, got {self.out_scale}")

    @property
    def out_size(self) -> int:
        """The side of the decoder's output in pixels."""
        return self.size * self.out_scale

    @property
    def extra_channels(self) -> tuple[int, ...]:
        """Channels of the upscales past ``size`` (half the previous each): one per doubling of ``out_scale``."""
        extra, c = [], self.dec_channels[-1]
        for _ in range(self.out_scale.bit_length() - 1):
            c = max(c // 2, 16)
            extra.append(c)
        return tuple(extra)

    @property
    def dense_side(self) -> int:
        return self.size >> len(self.enc_channels)  # size / 2**len

    def ch(self, channels: int) -> int:
        """A channel count scaled by ``width``, a multiple of 8 (what tensor cores like), at least 8."""
        return max(8, int(round(channels * self.width / 8)) * 8)


_PRESETS: dict[str, ModelConfig] = {
    # The classic deepfakes model, layer for layer: 64 px in and out, no mask.
    "original": ModelConfig(name="original"),
    # 128 px in with a learned mask, DFL-H128-like (the dense grid is 8x8), drawing 256 px faces (out_scale 2,
    # +33 % FLOPs): for GPUs, where a 300 px face should not be an upscaled 128 px one.
    "hires": ModelConfig(
        name="hires",
        out_scale=2,
        size=128,
        enc_channels=(128, 256, 512, 1024),
        latent=512,
        dense_channels=512,
        enc_upscale=512,
        dec_channels=(512, 256, 128),
        learn_mask=True,
    ),
    # The classic layout at a quarter of its width, with a mask, for CPUs. Measured on 2 cores (quality_train.py):
    # half width costs 3.5-4x more per step and learns no more per step early on, so it loses within 10 minutes;
    # an eighth of the width runs 2x faster and wins at 1 minute, ties at 10, but falls behind as training goes on
    # (and a guild's bank keeps training across swaps), so a quarter it is. Drawing 128 px faces (out_scale 2)
    # makes a CPU step 1.8x slower (docs/QUALITY.md): in minutes of CPU training the face is not learnt yet, so not.
    "lite": ModelConfig(name="lite", size=64, width=0.25, learn_mask=True),
}


def model_config(name: str, *, width: float | None = None) -> ModelConfig:
    """The preset ``original``, ``hires`` or ``lite``, optionally at another width."""
    if name not in _PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(_PRESETS)}")
    cfg = _PRESETS[name]
    return cfg if width is None else replace(cfg, width=float(width))


def config_from_dict(args: dict[str, Any]) -> ModelConfig:
    """The inverse of ``dataclasses.asdict`` for a ModelConfig (lists back to tuples)."""
    known = {f for f in ModelConfig.__dataclass_fields__}
    clean: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items() if k in known}
    return ModelConfig(**clean)


# -----------------------------------------------------------------------------


class Conv(nn.Module):
    """A stride-2 convolution and a leaky ReLU: halves the side."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=2, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x), 0.1)  # (B, C_out, H/2, W/2)


class Upscale(nn.Module):
    """A 3x3 convolution to 4x the channels, a leaky ReLU and a pixel shuffle: doubles the side."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out * 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv(x), 0.1)  # (B, 4*C_out, H, W)
        return F.pixel_shuffle(x, 2)  # (B, C_out, 2H, 2W)


class Encoder(nn.Module):
    """Face to code: convs down to a small grid, a dense bottleneck, back to a grid, one upscale."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        chans = [3] + [cfg.ch(c) for c in cfg.enc_channels]
        self.convs = nn.Sequential(
            *[Conv(a, b, cfg.kernel) for a, b in zip(chans[:-1], chans[1:], strict=True)]
        )
        side = cfg.dense_side
        self.dense_in = nn.Linear(chans[-1] * side * side, cfg.ch(cfg.latent))
        self.dense_out = nn.Linear(cfg.ch(cfg.latent), cfg.ch(cfg.dense_channels) * side * side)
        self.upscale = Upscale(cfg.ch(cfg.dense_channels), cfg.ch(cfg.enc_upscale))

    @property
    def out_channels(self) -> int:
        return self.cfg.ch(self.cfg.enc_upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self.cfg.dense_side
        x = self.convs(x)  # (B, C, s, s) with s = size / 2**len(enc_channels)
        x = self.dense_in(x.flatten(1))  # (B, latent)
        x = self.dense_out(x)  # (B, C' * s * s)
        x = x.view(x.shape[0], -1, side, side)  # (B, C', s, s)
        out: torch.Tensor = self.upscale(x)  # (B, enc_upscale, 2s, 2s)
        return out


class Decoder(nn.Module):
    """Code to one person's face: pixel-shuffle upscales, then a sigmoid RGB head and an optional mask head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        chans = [cfg.ch(cfg.enc_upscale)] + [cfg.ch(c) for c in cfg.dec_channels + cfg.extra_channels]
        self.upscales = nn.Sequential(*[Upscale(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True)])
        self.rgb = nn.Conv2d(chans[-1], 3, cfg.kernel, padding=cfg.kernel // 2)
        self.mask = nn.Conv2d(chans[-1], 1, cfg.kernel, padding=cfg.kernel // 2) if cfg.learn_mask else None

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.upscales(z)  # (B, C, O, O), O = out_size
        rgb = torch.sigmoid(self.rgb(x))  # (B, 3, O, O)
        mask = torch.sigmoid(self.mask(x)) if self.mask is not None else None  # (B, 1, O, O)
        return rgb, mask


# -----------------------------------------------------------------------------


def _key(identity: str) -> str:
    # ModuleDict keys may not contain '.', be empty or shadow an attribute: escape '%' and '.', add a prefix.
    return "id_" + identity.replace("%", "%25").replace(".", "%2E")


def _identity(key: str) -> str:
    return key[3:].replace("%2E", ".").replace("%25", "%")


class FaceBank(nn.Module):
    """The shared encoder and one decoder per identity (``decoders`` is keyed by an escaped identity id)."""

    def __init__(self, cfg: ModelConfig, identities: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoders = nn.ModuleDict()
        for identity in identities:
            self.add_identity(identity)

    @property
    def identities(self) -> list[str]:
        return [_identity(k) for k in self.decoders.keys()]

    def decoder(self, identity: str) -> Decoder:
        key = _key(identity)
        if key not in self.decoders:
            raise KeyError(f"no decoder for identity {identity!r}; the bank has {self.identities}")
        decoder = self.decoders[key]
        assert isinstance(decoder, Decoder)  # a ModuleDict hands back Modules
        return decoder

    def add_identity(self, identity: str, init_from: str | None = None) -> Decoder:
        """Add a decoder, a copy of ``init_from``'s (it already draws a face: learns a new one faster) or fresh."""
        if not isinstance(identity, str) or not identity:
            raise ValueError("an identity id is a non-empty string")
        if _key(identity) in self.decoders:
            raise ValueError(f"identity {identity!r} is already in the bank")
        decoder = Decoder(self.cfg)
        if init_from is not None:
            decoder.load_state_dict(self.decoder(init_from).state_dict())
        ref = next(self.encoder.parameters())
        self.decoders[_key(identity)] = decoder.to(device=ref.device, dtype=ref.dtype)
        return self.decoder(identity)

    def remove_identity(self, identity: str) -> None:
        self.decoder(identity)  # raises KeyError with the list when absent
        del self.decoders[_key(identity)]

    def forward(self, x: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        z: torch.Tensor = self.encoder(x)  # (B, C, s, s)
        return self.decoder(identity).forward(z)  # (B, 3, S, S), (B, 1, S, S) or None

    @torch.no_grad()
    def swap(self, x: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Any face in, ``identity``'s face with the same pose and expression out (no gradients)."""
        return self.forward(x, identity)


# -----------------------------------------------------------------------------


def save_bank(path: str | os.PathLike[str], bank: FaceBank, extra: dict[str, Any] | None = None) -> None:
    """Write the bank atomically: a temp file in the same folder, then ``os.replace``.

    If anything fails, the previous file at ``path`` is left as it was. ``extra`` must hold only what
    ``torch.load(weights_only=True)`` accepts: tensors, numbers, strings, lists, tuples, dicts.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    payload = {
        "format": "famswap-bank/1",
        "model_args": asdict(bank.cfg),
        "identities": bank.identities,
        "state_dict": bank.state_dict(),
        "extra": extra or {},
    }
    fd, tmp = tempfile.mkstemp(prefix=".bank-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_bank(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[FaceBank, dict[str, Any]]:
    """Read a bank written by ``save_bank``: the bank (config and decoders rebuilt) and its ``extra`` dict."""
    payload = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != "famswap-bank/1":
        raise ValueError(f"{os.fspath(path)} is not a famswap bank file")
    bank = FaceBank(config_from_dict(payload["model_args"]), payload["identities"])
    bank.load_state_dict(payload["state_dict"])
    return bank.to(map_location), payload["extra"]


def save_encoder(path: str | os.PathLike[str], bank: FaceBank) -> None:
    """The bank's encoder with its model arguments (what ``bank_from_parts`` needs to rebuild the bank)."""
    torch.save({"model_args": asdict(bank.cfg), "state": bank.encoder.state_dict()}, os.fspath(path))


def save_decoder(path: str | os.PathLike[str], bank: FaceBank, identity: str) -> None:
    """One identity's decoder weights."""
    torch.save(bank.decoder(identity).state_dict(), os.fspath(path))


def bank_from_parts(
    encoder: str | os.PathLike[str], decoders: Mapping[str, str | os.PathLike[str]]
) -> FaceBank:
    """A bank from an encoder file (``save_encoder``) and decoder files (``save_decoder``) keyed by identity."""
    enc = torch.load(os.fspath(encoder), map_location="cpu", weights_only=True)
    bank = FaceBank(config_from_dict(enc["model_args"]))
    bank.encoder.load_state_dict(enc["state"])
    for identity, path in decoders.items():
        bank.add_identity(identity)
        bank.decoder(identity).load_state_dict(torch.load(os.fspath(path), map_location="cpu", weights_only=True))
    return bank


# -----------------------------------------------------------------------------


def model_flops(cfg: ModelConfig) -> float:
    """FLOPs (2 x multiply-accumulates) of one sample through the encoder and one decoder, forward only.

    Counted by running the model on the meta device with hooks on every conv and linear layer, so the count
    follows the real layers. Activations, pixel shuffles and biases are ignored (a few per cent at most).
    """
    macs = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs += out[0].numel() * k
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features

    with torch.device("meta"):
        bank = FaceBank(cfg, ["a"])
    hooks = [m.register_forward_hook(count) for m in bank.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        bank(torch.empty(1, 3, cfg.size, cfg.size, device="meta"), "a")
    finally:
        for h in hooks:
            h.remove()
    return 2.0 * macs


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "ModelConfig",
    "model_config",
    "config_from_dict",
    "Encoder",
    "Decoder",
    "FaceBank",
    "save_bank",
    "load_bank",
    "save_encoder",
    "save_decoder",
    "bank_from_parts",
    "model_flops",
    "param_count",
]
