"""`famswap run`: the bot in this process and one worker per GPU (or one CPU worker) as restarted child processes
(``worker.supervisor``); the wiring of the two."""

from __future__ import annotations

import asyncio
import logging
import signal

from common.config import Settings
from common.errors import ConfigError, FamswapError
from worker.supervisor import WorkerProcess, stop_workers, supervise, worker_devices

log = logging.getLogger("famswap.supervisor")


async def _run(settings: Settings, with_worker: bool) -> int:
    import aiohttp
    import discord

    from bot.app import serve
    from storage import open_storage

    workers = [WorkerProcess(device) for device in worker_devices(settings)] if with_worker else []
    async with open_storage(settings) as store:
        supervisor = asyncio.create_task(supervise(workers)) if workers else None
        try:
            await serve(settings, store)
        except discord.LoginFailure as exc:
            raise ConfigError(
                "Discord refused the bot token in DISCORD_TOKEN.",
                hint="Copy it again from https://discord.com/developers/applications → your app → Bot → Reset Token.",
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise FamswapError(
                f"Could not reach Discord at {settings.discord_api} ({exc}).",
                hint="Check this machine's network, or FAMSWAP_DISCORD_API if you set it.",
            ) from exc
        finally:
            if supervisor is not None:
                supervisor.cancel()
            stop_workers(workers)
    return 0


def run_all(settings: Settings, *, with_worker: bool = True) -> int:
    """Run until Ctrl-C or SIGTERM; workers get SIGTERM so they checkpoint before exiting."""
    loop = asyncio.new_event_loop()
    main = loop.create_task(_run(settings, with_worker))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    try:
        return loop.run_until_complete(main)
    except asyncio.CancelledError:
        log.info("famswap stopped")
        return 0
    finally:
        loop.close()
