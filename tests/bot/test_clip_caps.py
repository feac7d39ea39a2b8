"""The bot's attachment check refuses clips over the frame-rate and frame caps before storing anything."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from storage import Storage
from tests.bot.conftest import BotRunner, Family, ready_identity
from tests.bot.fake_discord import FakeDiscord
from tests.media_kit import make_clip, shrink_durations


async def test_swap_refuses_a_1000_fps_clip(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, tmp_path: Path
) -> None:
    identity = await ready_identity(store, family.guild, family.alice)
    clip = make_clip(tmp_path / "fast.mp4", fps=1000, frames=12).read_bytes()
    ia = await fake.slash("swap", user=family.alice, channel=family.general, clip=fake.upload("fast.mp4", clip),
                          identity=str(identity.id))
    await fake.wait_for(lambda: ia.replies, what="the refusal")
    assert "1000 frames per second; the limit is 120" in ia.reply_text and ia.replies[0].ephemeral
    assert await store.list_jobs(family.guild.id) == []


async def test_enroll_refuses_a_video_whose_header_hides_its_frames(
    fake: FakeDiscord, runner: BotRunner, family: Family, store: Storage, tmp_path: Path
) -> None:
    assert runner.bot is not None
    runner.bot.settings = replace(runner.settings, max_clip_frames=60)
    honest = make_clip(tmp_path / "long.mp4", fps=30, frames=90).read_bytes()
    lying = shrink_durations(honest, 3)  # claims 1 s at 90 fps... of its 90 frames
    ia = await fake.slash("enroll", user=family.bob, channel=family.general, video=fake.upload("me.mp4", lying))
    await fake.wait_for(lambda: ia.replies, what="the refusal")
    assert "has 90 frames; the limit is 60" in ia.reply_text
    assert await store.list_identities(family.guild.id, family.bob.id) == []
