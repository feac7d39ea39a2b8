"""The bot's wiring: what it imports, how it connects, what it registers, how it answers errors."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from tests.bot.conftest import BotRunner, Family
from tests.bot.fake_discord import MESSAGE_COMMAND, FakeDiscord

HEAVY = ("torch", "cv2", "mediapipe", "swap_engine")


def test_bot_imports_no_heavy_module() -> None:
    # A fresh interpreter, so modules other tests imported do not count.
    code = (
        "import sys, bot.app, bot.cogs.enroll, bot.cogs.swap, bot.cogs.identities, bot.cogs.admin, bot.progress\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"bot/ pulled in {out.stdout.strip()}"


async def test_connects_with_minimal_intents_and_registers_commands(fake: FakeDiscord, runner: BotRunner, family: Family) -> None:
    assert runner.bot is not None
    identify = fake.identifies[-1]
    assert identify["intents"] == 1, "only the guilds intent: no members, presences or message content"
    assert identify["token"] == fake.token
    assert [g.id for g in runner.bot.guilds] == [family.guild.id]
    names = {c["name"] for c in fake.commands[None]}
    assert {"enroll", "swap", "identities", "status", "cancel", "share", "unshare", "forget", "claim", "famswap"} <= names
    fake.command("Enroll faces from this message", type=MESSAGE_COMMAND)
    fake.command("Swap me into this clip", type=MESSAGE_COMMAND)
    admin = fake.command("famswap")
    assert {o["name"] for o in admin["options"]} == {"settings", "purge"}
    assert admin["default_member_permissions"] == str(1 << 5), "hidden from members without Manage Server"
    # app command docstrings are the help users see
    enroll = fake.command("enroll")
    assert enroll["description"].startswith("Teach famswap a face")
    assert all(o["description"] != "…" for o in enroll["options"])


async def test_resumes_after_a_dropped_gateway(fake: FakeDiscord, runner: BotRunner, family: Family) -> None:
    await fake.drop_gateway()
    await fake.wait_for(lambda: fake.resumes, what="a RESUME")
    await fake.connected()
    ia = await fake.slash("status", user=family.bob, channel=family.general)
    await fake.wait_for(lambda: ia.replies, what="a reply after resuming")
    assert "no jobs" in ia.reply_text
    assert len(fake.identifies) == 1, "resumed, not re-identified"


async def test_serve_runs_until_cancelled(fake: FakeDiscord, family: Family, settings, store) -> None:
    from bot.app import serve

    task = asyncio.create_task(serve(settings, store))
    await fake.connected(timeout=15)
    ia = await fake.slash("status", user=family.alice, channel=family.general)
    await fake.wait_for(lambda: ia.replies, what="an answer from the served bot")
    task.cancel()  # what famswap run does on SIGTERM
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake.wait_for(lambda: not fake._sessions, what="the gateway session to close cleanly")


async def test_run_bot_in_its_own_process(fake: FakeDiscord, family: Family, settings, tmp_path) -> None:
    env = {**os.environ, **fake.environ(), "FAMSWAP_HOME": str(settings.home), "FAMSWAP_KEY_FILE": str(settings.key_path),
           "FAMSWAP_ENV_FILE": str(tmp_path / "none.env")}
    code = "from common.config import Settings; from bot.app import run_bot; run_bot(Settings.load())"
    # A shell's background job (`.ci/run &`) hands its children SIGINT ignored, and Python then never turns Ctrl-C
    # into KeyboardInterrupt: give the bot the default disposition a terminal would.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        await fake.connected(timeout=30)
        ia = await fake.slash("identities", user=family.bob, channel=family.general)
        await fake.wait_for(lambda: ia.replies, what="an answer from the bot process")
        assert "No faces yet" in ia.reply_text
    finally:
        # Ctrl-C: the bot finishes a progress pass in flight (up to 30 s) and closes. Generous for a busy CI box;
        # a bot that does not stop is killed, so no stray process is left for later tests, and its log is shown.
        proc.send_signal(signal.SIGINT)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 90)
        except TimeoutError:
            proc.kill()
            _, err = await proc.communicate()
            pytest.fail("the bot did not stop within 90 s of Ctrl-C:\n" + err.decode()[-3000:])
    assert proc.returncode == 0, err.decode()[-2000:]
