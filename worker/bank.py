"""The guild's face bank between storage (an encoder file and one decoder file per identity, versioned) and the
engine (a ``FaceBank``, written and read in parts by ``swap_engine.model``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from storage import Bank, Storage
from swap_engine.model import FaceBank, bank_from_parts, model_config, save_decoder, save_encoder
from worker.context import JobContext


async def decrypt_bank(store: Storage, bank: Bank, folder: Path) -> tuple[Path, dict[str, Path]]:
    """Decrypt a stored bank's parts into ``folder``: the encoder file and the decoder files by identity id."""
    assert bank.encoder is not None
    encoder = await store.decrypt_to(bank.encoder, folder / "encoder.pt")
    decoders = {str(i): await store.decrypt_to(ref, folder / f"decoder-{i}.pt") for i, ref in bank.decoders.items()}
    return encoder, decoders


def bank_from_storage(ctx: JobContext, model: str, folder: Path) -> tuple[FaceBank, int, dict[int, int]]:
    """The guild's bank as a FaceBank (encoder + the decoders storage has), its version, and decoder versions. A
    guild without a trained encoder gets a new bank of ``model``; one with an encoder keeps its model."""
    bank_row = ctx.call(ctx.store.get_bank(ctx.job.guild_id))
    if bank_row is None or bank_row.encoder is None:
        return FaceBank(model_config(model)), 0 if bank_row is None else bank_row.version, {}
    encoder, decoders = ctx.call(decrypt_bank(ctx.store, bank_row, folder))
    return bank_from_parts(encoder, decoders), bank_row.version, dict(bank_row.decoder_versions)


def bank_to_storage(ctx: JobContext, bank: FaceBank, base_version: int, identities: dict[int, int],
                    folder: Path, trained: dict[int, tuple[int, float]] | None = None) -> Bank:
    """Save the encoder and the decoders of ``identities`` (id → face-set version) as the guild's new bank;
    ``trained``: id → (steps, seconds) to add to each decoder's count. Returns the stored bank."""
    encoder = folder / "encoder.out.pt"
    save_encoder(encoder, bank)
    decoders: dict[int, Path] = {}
    for i in identities:
        decoders[i] = folder / f"decoder-{i}.out.pt"
        save_decoder(decoders[i], bank, str(i))
    return ctx.call(  # type: ignore[no-any-return]
        ctx.store.save_bank(
            ctx.job.guild_id,
            base_version=base_version,
            encoder=encoder,
            decoders=decoders,
            decoder_versions=identities,
            config={"model_args": asdict(bank.cfg)},
            trained=trained,
        )
    )
