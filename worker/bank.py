"""The guild's face bank between storage (an encoder file and one decoder file per identity, versioned) and the
engine (a ``FaceBank``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from worker.context import JobContext


def _save_part(obj: dict[str, Any], path: Path) -> Path:
    import torch

    torch.save(obj, path)
    return path


def bank_from_storage(ctx: JobContext, model: str, folder: Path) -> tuple[object, int, dict[str, int]]:
    """The guild's bank as a FaceBank (encoder + the decoders storage has), its version, and decoder versions."""
    import torch

    from swap_engine.model import FaceBank, config_from_dict, model_config

    bank_row = ctx.call(ctx.store.get_bank(ctx.job.guild_id))
    if bank_row is None or bank_row.encoder is None:
        return FaceBank(model_config(model)), 0 if bank_row is None else bank_row.version, {}
    enc_path = ctx.call(ctx.store.decrypt_to(bank_row.encoder, folder / "encoder.pt"))
    enc = torch.load(enc_path, map_location="cpu", weights_only=True)
    bank = FaceBank(config_from_dict(enc["model_args"]))
    bank.encoder.load_state_dict(enc["state"])
    for identity_id, ref in bank_row.decoders.items():
        path = ctx.call(ctx.store.decrypt_to(ref, folder / f"decoder-{identity_id}.pt"))
        bank.add_identity(str(identity_id))
        bank.decoder(str(identity_id)).load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return bank, bank_row.version, dict(bank_row.decoder_versions)


def bank_to_storage(ctx: JobContext, bank: Any, base_version: int, identities: dict[int, int], folder: Path) -> None:
    """Save the encoder and the decoders of ``identities`` (id → face-set version) as the guild's new bank."""
    enc = _save_part({"model_args": asdict(bank.cfg), "state": bank.encoder.state_dict()}, folder / "encoder.out.pt")
    decoders = {
        i: _save_part(bank.decoder(str(i)).state_dict(), folder / f"decoder-{i}.out.pt") for i in identities
    }
    ctx.call(
        ctx.store.save_bank(
            ctx.job.guild_id,
            base_version=base_version,
            encoder=enc,
            decoders=decoders,
            decoder_versions=identities,
            config={"model_args": asdict(bank.cfg)},
        )
    )

