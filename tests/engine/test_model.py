"""swap_engine.model: presets, shapes, the identity bank, FLOP counts and the atomic bank file."""

from __future__ import annotations

import os
from dataclasses import asdict, replace

import pytest
import torch

from swap_engine.model import (
    Decoder,
    Encoder,
    FaceBank,
    ModelConfig,
    config_from_dict,
    load_bank,
    model_config,
    model_flops,
    save_bank,
)


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast and steadier on a shared CPU
    yield
    torch.set_num_threads(before)


def tiny(name: str = "lite") -> ModelConfig:
    return model_config(name, width=1 / 16)


def test_original_is_the_classic_layout():
    cfg = model_config("original")
    assert (cfg.size, cfg.width, cfg.learn_mask) == (64, 1.0, False)
    enc = Encoder(cfg)
    convs = [layer.conv for layer in enc.convs]
    assert [c.out_channels for c in convs] == [128, 256, 512, 1024]
    assert all(c.kernel_size == (5, 5) and c.stride == (2, 2) for c in convs)
    assert (enc.dense_in.in_features, enc.dense_in.out_features) == (4 * 4 * 1024, 1024)
    assert enc.dense_out.out_features == 4 * 4 * 1024
    assert enc.upscale.conv.out_channels == 4 * 512  # pixel shuffle to 512
    dec = Decoder(cfg)
    assert [u.conv.out_channels // 4 for u in dec.upscales] == [256, 128, 64]
    assert dec.rgb.out_channels == 3 and dec.mask is None
    # ~3.8 GFLOPs forward: the classic model's size, counted on the meta device.
    assert 3.6e9 < model_flops(cfg) < 4.0e9


@pytest.mark.parametrize("name", ["original", "hires", "lite"])
def test_presets_forward_shapes(name):
    cfg = tiny(name)
    bank = FaceBank(cfg, ["a", "b"])
    x = torch.rand(2, 3, cfg.size, cfg.size)
    rgb, mask = bank(x, "b")
    out = cfg.size * cfg.out_scale
    assert rgb.shape == (2, 3, out, out)
    assert 0 <= float(rgb.detach().min()) and float(rgb.detach().max()) <= 1
    if cfg.learn_mask:
        assert mask is not None and mask.shape == (2, 1, out, out)
    else:
        assert mask is None
    swapped, _ = bank.swap(x, "a")
    assert not swapped.requires_grad


def test_out_scale_draws_more_pixels_from_the_same_input():
    lite = model_config("lite")
    big = replace(lite, out_scale=2)
    assert (lite.out_size, big.size, big.out_size) == (64, 64, 128)
    dec = Decoder(big)
    assert len(dec.upscales) == len(big.dec_channels) + 1
    rgb, mask = dec(torch.zeros(1, Encoder(big).out_channels, 8, 8))
    assert rgb.shape == (1, 3, 128, 128) and mask is not None and mask.shape == (1, 1, 128, 128)
    # The extra upscale is cheap in FLOPs (a fifth more); a CPU step is slower than that (docs/QUALITY.md).
    assert 1.0 < model_flops(big) / model_flops(lite) < 1.35
    hires = model_config("hires")
    assert hires.out_size == 2 * hires.size


def test_out_scale_is_checked_and_old_banks_default_to_one():
    with pytest.raises(ValueError, match="out_scale"):
        ModelConfig(out_scale=3)
    old = {k: v for k, v in asdict(model_config("lite")).items() if k != "out_scale"}
    assert config_from_dict(old).out_scale == 1


def test_hires_and_lite_choices():
    hires, lite = model_config("hires"), model_config("lite")
    assert hires.size >= 128 and hires.learn_mask
    assert lite.learn_mask and model_flops(lite) < model_flops(model_config("original")) / 8
    assert model_config("lite", width=0.5).width == 0.5
    with pytest.raises(ValueError, match="unknown model"):
        model_config("huge")


def test_flops_scale_with_width():
    full, half = model_flops(model_config("original")), model_flops(model_config("original", width=0.5))
    assert 3.5 < full / half < 4.2  # channels halve on both sides of each conv


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="decoder would draw 32 px"):
        ModelConfig(size=64, dec_channels=(256, 128))  # one upscale short
    with pytest.raises(ValueError, match="does not halve"):
        ModelConfig(size=100)


def test_identity_ids_with_dots_and_percent():
    bank = FaceBank(tiny(), ["user.1", "50%", "x%2Ey"])
    assert bank.identities == ["user.1", "50%", "x%2Ey"]
    assert bank.decoder("user.1") is not bank.decoder("x%2Ey")
    with pytest.raises(KeyError, match="no decoder"):
        bank.decoder("nobody")
    with pytest.raises(ValueError, match="already"):
        bank.add_identity("user.1")
    bank.remove_identity("50%")
    assert bank.identities == ["user.1", "x%2Ey"]


def test_add_identity_copies_or_initialises():
    torch.manual_seed(0)
    bank = FaceBank(tiny(), ["a"])
    copy = bank.add_identity("b", init_from="a")
    fresh = bank.add_identity("c")
    for (name, pa), pb, pc in zip(
        bank.decoder("a").state_dict().items(),
        copy.state_dict().values(),
        fresh.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(pa, pb), name
        assert pa.data_ptr() != pb.data_ptr()  # a copy, not shared storage
        if pa.dim() > 1:
            assert not torch.equal(pa, pc), name


def test_save_load_round_trip(tmp_path):
    cfg = tiny()
    bank = FaceBank(cfg, ["a", "b.c"])
    path = tmp_path / "bank.pt"
    save_bank(path, bank, {"note": "hi", "steps": 3})
    loaded, extra = load_bank(path, map_location="cpu")
    assert loaded.cfg == cfg and loaded.identities == ["a", "b.c"]
    assert extra == {"note": "hi", "steps": 3}
    x = torch.rand(2, 3, cfg.size, cfg.size)
    for ident in ("a", "b.c"):
        assert torch.equal(bank(x, ident)[0], loaded(x, ident)[0])
    assert [p.name for p in tmp_path.iterdir()] == ["bank.pt"]  # no temp file left


def test_failed_save_keeps_previous_file(tmp_path):
    bank = FaceBank(tiny(), ["a"])
    path = tmp_path / "bank.pt"
    save_bank(path, bank, {"version": 1})
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails inside torch.save
        save_bank(path, bank, {"bad": lambda: None})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["bank.pt"]
    assert load_bank(path)[1] == {"version": 1}


def test_load_refuses_other_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"hello": 1}, path)
    with pytest.raises(ValueError, match="not a famswap bank"):
        load_bank(path)
