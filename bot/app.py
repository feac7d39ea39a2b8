"""The bot itself: the Bot and CommandTree subclasses, wiring from Settings, and the entry points ``serve``/``run_bot``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.replies import reply_error
from common.config import Settings
from storage import Storage, open_storage

log = logging.getLogger(__name__)

INITIAL_EXTENSIONS = (
    "bot.cogs.enroll",
    "bot.cogs.swap",
    "bot.cogs.identities",
    "bot.cogs.admin",
)

NOT_SERVED = (
    "This famswap bot only serves the servers its host chose, so I'm leaving this one. "
    "To use famswap here, run your own copy (see famswap's README)."
)

# The smallest value discord.py accepts: a 429 asking for a longer wait raises RateLimited instead of sleeping,
# so a progress edit never blocks the poller for minutes.
MAX_RATELIMIT_TIMEOUT = 30.0


def point_at_discord(settings: Settings) -> None:
    """Send discord.py's REST calls and gateway connection where the settings say (Discord's own by default).

    discord.py keeps both as class attributes: ``Route.BASE`` is read whenever a route is built (bot and webhook
    requests alike) and ``DEFAULT_GATEWAY`` is where a non-sharded client connects. Attachment and CDN URLs need no
    setting: the bot downloads whatever URL the API hands it.
    """
    discord.http.Route.BASE = settings.discord_api
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway)


class FamswapTree(app_commands.CommandTree["FamswapBot"]):
    """Records guild and user rows before each command, and turns every command error into an ephemeral reply."""

    async def interaction_check(self, interaction: discord.Interaction[FamswapBot], /) -> bool:
        if interaction.guild_id is not None and not interaction.client.guild_allowed(interaction.guild_id):
            raise app_commands.CheckFailure(NOT_SERVED)
        if interaction.type is discord.InteractionType.application_command and interaction.guild_id is not None:
            store = interaction.client.store
            try:
                await store.ensure_guild(interaction.guild_id, interaction.guild.name if interaction.guild else "")
                await store.ensure_user(interaction.user.id, interaction.user.display_name)
            except Exception:  # the command itself will meet the same problem and report it
                log.exception("could not record guild/user for interaction %s", interaction.id)
        return True

    async def on_error(self, interaction: discord.Interaction[FamswapBot], error: app_commands.AppCommandError, /) -> None:
        await reply_error(interaction, error)


class FamswapBot(commands.Bot):
    """famswap's Discord client. Holds the Settings and the Storage it was built with; cogs reach them as
    ``bot.settings`` / ``bot.store`` (or ``interaction.client``)."""

    def __init__(
        self,
        settings: Settings,
        store: Storage,
        *,
        sync_commands: bool = True,
        poll_interval: float = 2.0,
        edit_interval: float = 12.0,
        **client_options: Any,
    ) -> None:
        # Only the guilds intent: interactions bring their own member data, and no message content is read.
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=FamswapTree,
            help_command=None,
            max_ratelimit_timeout=MAX_RATELIMIT_TIMEOUT,
            allowed_mentions=discord.AllowedMentions.none(),  # results opt in to mentioning their requester
            **client_options,
        )
        self.settings = settings
        self.store = store
        self.sync_commands = sync_commands
        self.poll_interval = poll_interval  # how often storage is asked for job changes
        self.edit_interval = edit_interval  # the least time between two edits of one status message
        self.http_session: aiohttp.ClientSession | None = None  # for downloading attachments (capped, streamed)
        self._reconciled = False  # guilds are checked once, at the first READY

    def guild_allowed(self, guild_id: int) -> bool:
        """``FAMSWAP_ALLOWED_GUILDS`` lists the servers served; empty: any server that adds the bot."""
        return not self.settings.allowed_guilds or guild_id in self.settings.allowed_guilds

    async def leave_unserved(self, guild: discord.Guild) -> None:
        """Leave a server the host did not allow, telling its owner (who, or whose admin, invited the bot) in one
        line: by DM, else in the server's system channel."""
        log.warning("leaving server %s (%s): not in FAMSWAP_ALLOWED_GUILDS", guild.name, guild.id)
        text = f"**{guild.name}**: {NOT_SERVED}"
        try:
            owner = guild.owner or await self.fetch_user(guild.owner_id)  # type: ignore[arg-type]
            await owner.send(text)
        except (discord.HTTPException, TypeError):
            if guild.system_channel is not None:
                try:
                    await guild.system_channel.send(text)
                except discord.HTTPException:
                    pass
        await guild.leave()

    async def reconcile_guilds(self) -> None:
        """After a start: leave servers that are not allowed, and erase (after the grace period) the data of servers
        that removed the bot while it was offline — ``on_guild_remove`` never fired for them."""
        for guild in list(self.guilds):
            if not self.guild_allowed(guild.id):
                try:
                    await self.leave_unserved(guild)
                except discord.HTTPException:
                    log.exception("could not leave server %s", guild.id)
        present = {g.id for g in self.guilds if self.guild_allowed(g.id)}
        scheduled, cancelled = await self.store.reconcile_guilds(present)
        if scheduled:
            log.info("not in server(s) %s any more: their data will be erased after the grace period", scheduled)
        if cancelled:
            log.info("back in server(s) %s: their scheduled erase is cancelled", cancelled)

    async def setup_hook(self) -> None:
        self.http_session = aiohttp.ClientSession()
        for extension in INITIAL_EXTENSIONS:
            await self.load_extension(extension)
        if self.sync_commands:
            synced = await self.tree.sync()
            log.info("synced %d application commands", len(synced))

    async def close(self) -> None:
        await super().close()
        if self.http_session is not None:
            await self.http_session.close()

    async def on_ready(self) -> None:
        log.info("connected as %s (%s) in %d server(s)", self.user, self.user.id if self.user else "?", len(self.guilds))
        if not self._reconciled:
            self._reconciled = True
            try:
                await self.reconcile_guilds()
            except Exception:  # the bot still serves; the next start tries again
                log.exception("could not reconcile servers at start-up")

    @property
    def downloads(self) -> aiohttp.ClientSession:
        assert self.http_session is not None, "the bot is not started"
        return self.http_session


def build_bot(settings: Settings, store: Storage, **options: Any) -> FamswapBot:
    """A bot pointed at the configured Discord API and gateway; ``options`` go to ``FamswapBot`` and on to
    discord.py's client (tests shorten the poll and edit intervals and ``guild_ready_timeout``)."""
    point_at_discord(settings)
    return FamswapBot(settings, store, **options)


async def serve(settings: Settings, store: Storage | None = None) -> None:
    """Run the bot until it is closed or cancelled. Opens storage itself when none is given."""
    token = settings.require_token()
    if store is None:
        async with open_storage(settings) as opened:
            await serve(settings, opened)
        return
    bot = build_bot(settings, store)
    async with bot:
        await bot.start(token)


def run_bot(settings: Settings) -> None:
    """Blocking entry point: the bot alone (no workers) until Ctrl-C."""
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        log.info("bot stopped")
