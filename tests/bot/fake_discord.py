"""A small fake Discord for tests: the REST routes and gateway websocket the real discord.py client talks to.

One ``FakeDiscord`` is an aiohttp server on 127.0.0.1 (random port) that plays Discord's part closely enough for the
unmodified discord.py client: login (``/users/@me``, ``/oauth2/applications/@me``), a gateway websocket (HELLO,
IDENTIFY → READY + GUILD_CREATE, heartbeats, RESUME with replay), command sync, interaction callbacks, webhooks for
follow-ups and original responses, channel messages with multipart attachments, and a CDN route serving attachment
bytes. Every request is recorded, so a test asserts what a user would see (``messages_in``, ``ephemeral_replies``,
``FakeMessage.edits``), and failures can be injected (429 with ``Via``, 413 / 40005, 30046 on old messages).

Discord behaviours the fake enforces because the bot must cope with them: a callback later than 3 s answers
10062 (Unknown interaction); a second callback answers 40060; uploads bigger than the guild's limit answer 413 with
code 40005; ephemeral messages cannot be reached through channel routes; an expired interaction token answers 50027.
Pitfalls it avoids for discord.py's sake: Content-Type exactly ``application/json`` (no charset), ``flags`` on
members, ``attachment_size_limit`` on interactions, snowflakes minted from the clock (``time_snowflake``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import mimetypes
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord
from aiohttp import WSMsgType, web

API_PREFIX = "/api/v10"
REC = web.RequestKey("rec", object)  # the Recorded entry of a request, for its handler
EPHEMERAL = 1 << 6
LOADING = 1 << 7

# Interaction and option types of Discord's API, by their numbers on the wire.
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
SUB_COMMAND, SUB_COMMAND_GROUP, STRING, INTEGER, BOOLEAN = 1, 2, 3, 4, 5
USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 6, 7, 8, 9, 10, 11
CHAT_INPUT, USER_COMMAND, MESSAGE_COMMAND = 1, 2, 3


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # web.json_response would add "; charset=utf-8", and discord.py only parses an exact "application/json".
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"message": message, "code": code}, status=status)


# --- the fake's world: users, guilds, channels, roles ---------------------------------------------------------------


@dataclass(eq=False)
class FakeUser:
    id: int
    name: str
    bot: bool = False
    dms_open: bool = True  # False: the user does not accept direct messages from the bot (50007)

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": self.name,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass(eq=False)
class FakeRole:
    id: int
    name: str
    permissions: int = 0
    position: int = 1

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "hoist": False,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass(eq=False)
class FakeChannel:
    id: int
    name: str
    guild: FakeGuild

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": 0,
            "guild_id": str(self.guild.id),
            "name": self.name,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }


@dataclass(eq=False)
class FakeGuild:
    id: int
    name: str
    owner: FakeUser
    premium_tier: int = 0
    channels: list[FakeChannel] = field(default_factory=list)
    roles: list[FakeRole] = field(default_factory=list)
    members: dict[int, tuple[FakeUser, list[int]]] = field(default_factory=dict)
    admins: set[int] = field(default_factory=set)

    @property
    def filesize_limit(self) -> int:
        return {2: 50 * 1024 * 1024, 3: 100 * 1024 * 1024}.get(self.premium_tier, 10 * 1024 * 1024)

    @property
    def everyone(self) -> FakeRole:
        return self.roles[0]

    def permissions_of(self, user: FakeUser) -> int:
        if user.id == self.owner.id or user.id in self.admins:
            return discord.Permissions.all().value
        _, role_ids = self.members[user.id]
        value = self.everyone.permissions
        for role in self.roles:
            if role.id in role_ids:
                value |= role.permissions
        return value

    def member_payload(self, user: FakeUser, *, with_user: bool = True, with_permissions: bool = False) -> dict:
        _, role_ids = self.members[user.id]
        data: dict[str, Any] = {
            "nick": None,
            "avatar": None,
            "roles": [str(r) for r in role_ids],
            "joined_at": _now_iso(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,  # discord.py reads it unconditionally
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = user.payload()
        if with_permissions:
            data["permissions"] = str(self.permissions_of(user))
        return data

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "owner_id": str(self.owner.id),
            "features": [],
            "roles": [r.payload() for r in self.roles],
            "channels": [c.payload() for c in self.channels],
            "members": [self.member_payload(u) for u, _ in self.members.values()],
            "member_count": len(self.members),
            "premium_tier": self.premium_tier,
            "premium_subscription_count": 0,
            "emojis": [],
            "stickers": [],
            "threads": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "voice_states": [],
            "presences": [],
            "large": False,
            "unavailable": False,
            "joined_at": _now_iso(),
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "afk_timeout": 300,
        }


@dataclass(eq=False)
class FakeAttachment:
    """A file a user uploaded (with a slash command option or in a posted message)."""

    id: int
    filename: str
    data: bytes
    content_type: str | None
    url: str
    size: int
    ephemeral: bool = False

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "ephemeral": self.ephemeral,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        return data


# --- what users see: messages and interactions ----------------------------------------------------------------------


@dataclass(eq=False)
class FakeMessage:
    data: dict[str, Any]
    channel: FakeChannel
    ephemeral: bool = False
    interaction: FakeInteraction | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)  # the message as it was after each edit
    deleted: bool = False
    fake: FakeDiscord | None = None

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def content(self) -> str:
        return self.data.get("content") or ""

    @property
    def author_id(self) -> int:
        return int(self.data["author"]["id"])

    @property
    def flags(self) -> int:
        return int(self.data.get("flags") or 0)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def attachments(self) -> list[dict[str, Any]]:
        return list(self.data.get("attachments") or [])

    @property
    def filenames(self) -> list[str]:
        return [a["filename"] for a in self.attachments]

    @property
    def reply_to(self) -> int | None:
        ref = self.data.get("message_reference")
        return int(ref["message_id"]) if ref else None

    @property
    def mentions(self) -> list[int]:
        return [int(u["id"]) for u in self.data.get("mentions") or []]

    @property
    def text(self) -> str:
        """Everything readable: content, embed titles, descriptions, fields and footers."""
        parts = [self.content]
        for embed in self.data.get("embeds") or []:
            parts += [embed.get("title") or "", embed.get("description") or ""]
            for f in embed.get("fields") or []:
                parts += [f.get("name") or "", f.get("value") or ""]
            parts.append((embed.get("footer") or {}).get("text") or "")
        return "\n".join(p for p in parts if p)

    @property
    def components(self) -> list[dict[str, Any]]:
        """Interactive components (buttons, selects), flattened out of action rows."""
        found: list[dict[str, Any]] = []

        def walk(items: Iterable[dict[str, Any]]) -> None:
            for item in items:
                if item.get("type") in (2, 3, 5, 6, 7, 8):
                    found.append(item)
                walk(item.get("components") or [])

        walk(self.data.get("components") or [])
        return found

    @property
    def buttons(self) -> list[dict[str, Any]]:
        return [c for c in self.components if c.get("type") == 2]

    def file(self, filename: str) -> bytes:
        """The bytes of one attachment of this message, as the CDN serves them."""
        assert self.fake is not None
        for att in self.attachments:
            if att["filename"] == filename:
                return self.fake.cdn[int(att["id"])][1]
        raise KeyError(f"{filename} not attached; attachments: {self.filenames}")

    def __repr__(self) -> str:
        kind = "ephemeral" if self.ephemeral else "public"
        return f"<FakeMessage {self.id} {kind} {self.text[:80]!r} files={self.filenames}>"


@dataclass(eq=False)
class FakeInteraction:
    id: int
    token: str
    type: int
    user: FakeUser
    channel: FakeChannel
    created: float
    payload: dict[str, Any]
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    message: FakeMessage | None = None  # the message whose component was used
    original: FakeMessage | None = None
    followups: list[FakeMessage] = field(default_factory=list)
    choices: list[dict[str, Any]] | None = None
    modal: dict[str, Any] | None = None  # the form the bot opened in answer (callback type 9)
    expired: bool = False

    @property
    def responded(self) -> bool:
        return bool(self.callbacks)

    @property
    def replies(self) -> list[FakeMessage]:
        """What the user got back: the original response (when it has content; not the message of a used
        component) and the follow-ups."""
        own = self.original is not None and self.original is not self.message and not self.original.loading
        out = [self.original] if own else []
        return out + [m for m in self.followups if m is not self.original]

    @property
    def reply_text(self) -> str:
        return "\n".join(m.text for m in self.replies)


@dataclass(eq=False)
class FakeDM:
    """A direct message the bot sent to a user."""

    user: FakeUser
    text: str
    files: dict[str, bytes]


@dataclass
class Recorded:
    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any
    files: list[tuple[str, str, bytes]]  # (field, filename, bytes)
    status: int = 0
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Injection:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    times: int


@dataclass(eq=False)
class _GatewaySession:
    id: str
    ws: web.WebSocketResponse | None
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)


class FakeDiscord:
    """The fake server and its test API. ``async with FakeDiscord() as fake:`` starts and stops it."""

    def __init__(self, *, token: str = "fake-token", callback_deadline: float = 3.0) -> None:
        self.token = token
        self.callback_deadline = callback_deadline
        self._ids = itertools.count(1)
        self.app_id = self.mint()
        self.bot_user = FakeUser(self.app_id, "famswap", bot=True)
        self.users: dict[int, FakeUser] = {self.bot_user.id: self.bot_user}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.messages: dict[int, FakeMessage] = {}
        self.dm_channels: dict[int, FakeUser] = {}  # DM channel id → its recipient
        self.dms: list[FakeDM] = []
        self.left: list[int] = []  # guilds the bot left on its own
        self.interactions: dict[str, FakeInteraction] = {}  # by token
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None: global) → registered commands
        self.cdn: dict[int, tuple[str, bytes, str]] = {}  # attachment id → (filename, bytes, content type)
        self.requests: list[Recorded] = []
        self.unhandled: list[Recorded] = []
        self.identifies: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.edit_limited: set[int] = set()  # message ids whose edits answer 30046
        self._sessions: dict[str, _GatewaySession] = {}
        self._injections: list[_Injection] = []
        self._runner: web.AppRunner | None = None
        self._changed: asyncio.Condition | None = None
        self.port = 0

    # --- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        self._changed = asyncio.Condition()
        app = web.Application(middlewares=[self._middleware], client_max_size=1024**3)
        app.router.add_get("/gw", self._gateway)
        app.router.add_get("/cdn/attachments/{channel}/{id}/{filename}", self._cdn)
        for method, path, handler in self._routes():
            app.router.add_route(method, API_PREFIX + path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for session in list(self._sessions.values()):
            if session.ws is not None and not session.ws.closed:
                await session.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What FAMSWAP_DISCORD_API should be set to."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """What FAMSWAP_DISCORD_GATEWAY should be set to."""
        return f"ws://127.0.0.1:{self.port}/gw"

    def environ(self) -> dict[str, str]:
        return {"DISCORD_TOKEN": self.token, "FAMSWAP_DISCORD_API": self.api_url, "FAMSWAP_DISCORD_GATEWAY": self.gateway_url}

    def mint(self) -> int:
        # Snowflakes from the clock: discord.py derives created_at from them, and an interaction whose id looks old
        # is treated as expired. The counter keeps ids unique within one millisecond.
        return discord.utils.time_snowflake(datetime.now(UTC)) + next(self._ids) % (1 << 22)

    # --- building the world -------------------------------------------------------------------------------------

    def add_user(self, name: str) -> FakeUser:
        user = FakeUser(self.mint(), name)
        self.users[user.id] = user
        return user

    def add_guild(self, name: str, owner: FakeUser, *, channels: Iterable[str] = ("general",), premium_tier: int = 0) -> FakeGuild:
        gid = self.mint()
        everyone = FakeRole(gid, "@everyone", permissions=discord.Permissions.text().value | discord.Permissions(view_channel=True).value, position=0)
        guild = FakeGuild(gid, name, owner, premium_tier=premium_tier, roles=[everyone])
        self.guilds[gid] = guild
        guild.members[self.bot_user.id] = (self.bot_user, [])
        guild.members[owner.id] = (owner, [])
        for channel_name in channels:
            self.add_channel(guild, channel_name)
        return guild

    def add_channel(self, guild: FakeGuild, name: str) -> FakeChannel:
        channel = FakeChannel(self.mint(), name, guild)
        guild.channels.append(channel)
        self.channels[channel.id] = channel
        return channel

    async def add_role(self, guild: FakeGuild, name: str, permissions: int = 0) -> FakeRole:
        """A new role; a connected bot hears of it (GUILD_ROLE_CREATE), as it would from Discord."""
        role = FakeRole(self.mint(), name, permissions, position=len(guild.roles))
        guild.roles.append(role)
        await self.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": role.payload()})
        return role

    def add_member(self, guild: FakeGuild, user: FakeUser, *, roles: Iterable[FakeRole] = (), admin: bool = False) -> None:
        guild.members[user.id] = (user, [r.id for r in roles])
        if admin:
            guild.admins.add(user.id)

    def upload(self, filename: str, data: bytes, *, content_type: str | None = None, size: int | None = None, ephemeral: bool = True) -> FakeAttachment:
        """A file as a user's client uploads it: served by the CDN route. ``size`` may lie, as a test needs."""
        aid = self.mint()
        ctype = content_type or mimetypes.guess_type(filename)[0]
        self.cdn[aid] = (filename, data, ctype or "application/octet-stream")
        url = f"{self.base_url}/cdn/attachments/0/{aid}/{filename}"
        return FakeAttachment(aid, filename, data, ctype, url, len(data) if size is None else size, ephemeral)

    def post_user_message(self, channel: FakeChannel, user: FakeUser, content: str = "", attachments: Iterable[FakeAttachment] = ()) -> FakeMessage:
        """A message a member posted in a channel (for message context menus)."""
        data = self._message_data(channel, user, {"content": content})
        data["attachments"] = [{**a.payload(), "ephemeral": False} for a in attachments]
        return self._store(FakeMessage(data, channel, fake=self))

    async def remove_bot_from(self, guild: FakeGuild) -> None:
        """The bot is kicked from ``guild`` (GUILD_DELETE without ``unavailable``)."""
        self.guilds.pop(guild.id, None)
        await self.dispatch("GUILD_DELETE", {"id": str(guild.id)})

    async def add_bot_to(self, guild: FakeGuild) -> None:
        """The bot is invited (back) into ``guild``."""
        self.guilds[guild.id] = guild
        payload = guild.payload()
        del payload["unavailable"]  # absent when joining; false only when a known guild comes back
        await self.dispatch("GUILD_CREATE", payload)

    # --- failure injection --------------------------------------------------------------------------------------

    def fail_next(self, method: str, path: str, status: int, body: dict[str, Any] | None = None, *, headers: dict[str, str] | None = None, times: int = 1) -> None:
        """Answer the next ``times`` requests matching ``method`` and the ``path`` regex with this error."""
        body = body if body is not None else {"message": f"{status}", "code": 0}
        self._injections.append(_Injection(method.upper(), re.compile(path), status, body, headers or {}, times))

    def rate_limit_next(self, method: str, path: str, retry_after: float, *, times: int = 1) -> None:
        """A real-looking 429: ``Via`` header (without it discord.py takes it for a Cloudflare ban) and retry_after."""
        headers = {"Via": "1.1 google", "Retry-After": str(max(1, int(retry_after))), "X-RateLimit-Scope": "user"}
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
        self.fail_next(method, path, 429, body, headers=headers, times=times)

    def reject_next_upload(self, *, times: int = 1) -> None:
        """The next message create with files answers 413 / 40005 whatever its size."""
        self.fail_next("POST", r"^/channels/\d+/messages#files$", 413, {"message": "Request entity too large", "code": 40005}, times=times)

    def age_message(self, message: FakeMessage) -> None:
        """Make ``message`` older than an hour: its edits now answer 30046, as Discord does for old messages."""
        self.edit_limited.add(message.id)

    def expire(self, interaction: FakeInteraction) -> None:
        """The interaction token is past its 15 minutes."""
        interaction.expired = True

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close every gateway connection uncleanly, as a network blip does: the client should RESUME."""
        for session in list(self._sessions.values()):
            ws, session.ws = session.ws, None  # detached first: the session stays resumable
            if ws is not None and not ws.closed:
                await ws.close(code=code)

    # --- driving the bot: interactions --------------------------------------------------------------------------

    def command(self, name: str, *, type: int = CHAT_INPUT, guild: FakeGuild | None = None) -> dict[str, Any]:
        """The registered definition of a command (global or, when given, the guild's own)."""
        for scope in ([guild.id] if guild else []) + [None]:
            for cmd in self.commands.get(scope, []):
                if cmd["name"] == name and cmd.get("type", CHAT_INPUT) == type:
                    return cmd
        registered = {k: [c["name"] for c in v] for k, v in self.commands.items()}
        raise AssertionError(f"command {name!r} (type {type}) was never registered; registered: {registered}")

    async def slash(self, command: str, *, user: FakeUser, channel: FakeChannel, **options: Any) -> FakeInteraction:
        """Run ``/command`` (``"group sub"`` for subcommands) with option values as a user would type them.

        Attachments are ``FakeAttachment`` (from ``upload``), users ``FakeUser``, roles ``FakeRole``, channels
        ``FakeChannel``; ``None`` values are left out.
        """
        data = self._command_data(command, channel, options, focused=None)
        return await self._interact(APPLICATION_COMMAND, user, channel, data)

    async def autocomplete(self, command: str, focused: str, *, user: FakeUser, channel: FakeChannel, timeout: float = 5, **options: Any) -> list[dict[str, Any]]:
        """Type into option ``focused`` (its current text among ``options``) and return the choices offered."""
        data = self._command_data(command, channel, options, focused=focused)
        ia = await self._interact(AUTOCOMPLETE, user, channel, data)
        await self.wait_for(lambda: ia.choices is not None, timeout=timeout, what=f"autocomplete of {command} {focused}")
        assert ia.choices is not None
        return ia.choices

    async def message_command(self, name: str, message: FakeMessage, *, user: FakeUser) -> FakeInteraction:
        """Right-click ``message`` → Apps → ``name``."""
        cmd = self.command(name, type=MESSAGE_COMMAND, guild=message.channel.guild)
        data = {
            "id": cmd["id"],
            "name": name,
            "type": MESSAGE_COMMAND,
            "target_id": str(message.id),
            "resolved": {"messages": {str(message.id): message.data}},
        }
        return await self._interact(APPLICATION_COMMAND, user, message.channel, data)

    async def click(self, message: FakeMessage, *, user: FakeUser, label: str | None = None, custom_id: str | None = None) -> FakeInteraction:
        """Press a button of ``message`` found by its label (or custom id)."""
        for comp in message.buttons:
            if (label is not None and comp.get("label") == label) or (custom_id is not None and comp.get("custom_id") == custom_id):
                data = {"custom_id": comp["custom_id"], "component_type": 2}
                return await self._interact(MESSAGE_COMPONENT, user, message.channel, data, message=message)
        raise AssertionError(f"no button {label or custom_id!r} on {message}; buttons: {[b.get('label') for b in message.buttons]}")

    async def submit_modal(self, opened_by: FakeInteraction, *, user: FakeUser | None = None, **values: str) -> FakeInteraction:
        """Fill in and submit the form the bot opened in answer to ``opened_by`` (fields by custom id or label)."""
        await self.wait_for(lambda: opened_by.modal is not None, what="the bot to open a form")
        form = opened_by.modal
        assert form is not None
        def answer(component: dict[str, Any]) -> dict[str, Any]:
            # Rows (type 1) and labels (type 18) wrap the inputs; inputs come back with their value.
            if component["type"] == 1:
                return {"type": 1, "components": [answer(c) for c in component.get("components") or []]}
            if component["type"] == 18:
                return {"type": 18, "component": answer(component["component"])}
            key = next((k for k in (component.get("custom_id"), component.get("label")) if k in values), None)
            return {"type": component["type"], "custom_id": component["custom_id"], "value": values[key] if key else ""}

        rows = [answer(c) for c in form.get("components") or []]
        data = {"custom_id": form["custom_id"], "components": rows}
        return await self._interact(MODAL_SUBMIT, user or opened_by.user, opened_by.channel, data)

    # --- reading what users see -----------------------------------------------------------------------------------

    def messages_in(self, channel: FakeChannel) -> list[FakeMessage]:
        """Public messages currently in ``channel``, oldest first."""
        return [m for m in self.messages.values() if m.channel is channel and not m.ephemeral and not m.deleted]

    def ephemeral_replies(self, user: FakeUser | None = None) -> list[FakeMessage]:
        """Ephemeral messages (only the interacting user sees them), optionally only those shown to ``user``."""
        return [
            m for m in self.messages.values()
            if m.ephemeral and not m.loading and (user is None or (m.interaction is not None and m.interaction.user is user))
        ]

    def last_edit_of(self, message: FakeMessage) -> dict[str, Any] | None:
        return message.edits[-1] if message.edits else None

    def requests_to(self, method: str, pattern: str) -> list[Recorded]:
        rx = re.compile(pattern)
        return [r for r in self.requests if r.method == method and rx.search(r.path)]

    async def wait_for(self, predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
        """Wait until ``predicate()`` is truthy, re-checking whenever the fake receives a request."""
        assert self._changed is not None
        try:
            async with self._changed:
                return await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
        except TimeoutError:
            recent = "\n".join(f"  {r.method} {r.path} → {r.status} {str(r.json)[:160]}" for r in self.requests[-15:])
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last requests:\n{recent}") from None

    async def wait_message(self, channel: FakeChannel, predicate: Callable[[FakeMessage], bool], *, timeout: float = 10.0, what: str = "message") -> FakeMessage:
        def find() -> FakeMessage | None:
            return next((m for m in self.messages_in(channel) if predicate(m)), None)

        return await self.wait_for(find, timeout=timeout, what=what)

    # --- internals: interactions --------------------------------------------------------------------------------

    def _command_data(self, command: str, channel: FakeChannel, options: dict[str, Any], *, focused: str | None) -> dict[str, Any]:
        top, *path = command.split()
        cmd = self.command(top, guild=channel.guild)
        resolved: dict[str, dict[str, Any]] = {}
        defs = cmd.get("options") or []
        nest: list[dict[str, Any]] = []
        out_top = nest
        for name in path:
            sub = next((o for o in defs if o["name"] == name and o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)), None)
            assert sub is not None, f"/{top} has no subcommand {name!r}"
            inner: list[dict[str, Any]] = []
            nest.append({"name": name, "type": sub["type"], "options": inner})
            nest, defs = inner, sub.get("options") or []
        nest.extend(self._options(defs, options, resolved, channel.guild, focused))
        data: dict[str, Any] = {"id": cmd["id"], "name": top, "type": CHAT_INPUT, "options": out_top}
        if resolved:
            data["resolved"] = resolved
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        return data

    def _options(self, defs: list[dict[str, Any]], values: dict[str, Any], resolved: dict[str, dict[str, Any]], guild: FakeGuild, focused: str | None) -> list[dict[str, Any]]:
        by_name = {d["name"]: d for d in defs}
        for d in defs:  # autocomplete comes while the user is still typing: other options may be missing
            if focused is None and d.get("required") and values.get(d["name"]) is None:
                raise AssertionError(f"option {d['name']!r} is required")
        out = []
        for name, value in values.items():
            if value is None:
                continue
            assert name in by_name, f"no option {name!r}; options: {sorted(by_name)}"
            kind = by_name[name]["type"]
            if isinstance(value, FakeAttachment):
                assert kind == ATTACHMENT, f"option {name!r} is not an attachment option"
                resolved.setdefault("attachments", {})[str(value.id)] = value.payload()
                value = str(value.id)
            elif isinstance(value, FakeUser):
                assert kind in (USER, MENTIONABLE), f"option {name!r} takes no user"
                resolved.setdefault("users", {})[str(value.id)] = value.payload()
                if value.id in guild.members:
                    member = guild.member_payload(value, with_user=False, with_permissions=True)
                    resolved.setdefault("members", {})[str(value.id)] = member
                value = str(value.id)
            elif isinstance(value, FakeRole):
                assert kind in (ROLE, MENTIONABLE), f"option {name!r} takes no role"
                resolved.setdefault("roles", {})[str(value.id)] = value.payload()
                value = str(value.id)
            elif isinstance(value, FakeChannel):
                assert kind == CHANNEL, f"option {name!r} takes no channel"
                resolved.setdefault("channels", {})[str(value.id)] = {**value.payload(), "permissions": str(discord.Permissions.all().value)}
                value = str(value.id)
            option: dict[str, Any] = {"name": name, "type": kind, "value": value}
            if name == focused:
                option["focused"] = True
            out.append(option)
        if focused is not None and focused not in values:
            out.append({"name": focused, "type": by_name[focused]["type"], "value": "", "focused": True})
        return out

    async def _interact(self, type_: int, user: FakeUser, channel: FakeChannel, data: dict[str, Any], message: FakeMessage | None = None) -> FakeInteraction:
        guild = channel.guild
        assert user.id in guild.members, f"{user.name} is not a member of {guild.name}"
        iid, token = self.mint(), f"itoken-{uuid.uuid4().hex}"
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.app_id),
            "type": type_,
            "token": token,
            "version": 1,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel.id),
            "channel": {**channel.payload(), "permissions": str(guild.permissions_of(user))},
            "member": guild.member_payload(user, with_permissions=True),
            "locale": "en-US",
            "guild_locale": "en-US",
            "app_permissions": str(discord.Permissions.all().value),
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": guild.filesize_limit,  # discord.py reads it unconditionally
            "data": data,
        }
        if message is not None:
            payload["message"] = message.data
        ia = FakeInteraction(iid, token, type_, user, channel, time.monotonic(), payload)
        ia.message = message if type_ == MESSAGE_COMPONENT else None
        self.interactions[token] = ia
        await self.dispatch("INTERACTION_CREATE", payload)
        return ia

    # --- internals: messages ------------------------------------------------------------------------------------

    def _message_data(self, channel: FakeChannel, author: FakeUser, payload: dict[str, Any]) -> dict[str, Any]:
        content = payload.get("content") or ""
        allowed = payload.get("allowed_mentions")
        mentioned = [int(m) for m in re.findall(r"<@!?(\d+)>", content)]
        if allowed is not None and "users" not in (allowed.get("parse") or []):
            listed = {str(u) for u in allowed.get("users") or []}
            mentioned = [m for m in mentioned if str(m) in listed]
        data: dict[str, Any] = {
            "id": str(self.mint()),
            "channel_id": str(channel.id),
            "guild_id": str(channel.guild.id),
            "author": author.payload(),
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [self.users[m].payload() for m in mentioned if m in self.users],
            "mention_roles": [],
            "attachments": [],
            "embeds": payload.get("embeds") or [],
            "components": payload.get("components") or [],
            "pinned": False,
            "type": 0,
            "flags": int(payload.get("flags") or 0),
        }
        ref = payload.get("message_reference")
        if ref:
            target = self.messages.get(int(ref["message_id"]))
            data["type"] = 19
            data["message_reference"] = {"message_id": str(ref["message_id"]), "channel_id": str(channel.id), "guild_id": str(channel.guild.id)}
            data["referenced_message"] = target.data if target is not None else None
        return data

    def _attach(self, channel: FakeChannel, payload: dict[str, Any], files: list[tuple[str, str, bytes]], keep: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = list(keep)
        for field_name, filename, blob in files:
            # "files[N]" pairs with the payload's attachments entry whose id is N (its filename and description).
            index = field_name.removeprefix("files[").removesuffix("]")
            meta = next((a for a in payload.get("attachments") or [] if str(a.get("id")) == index), {})
            aid = self.mint()
            name = meta.get("filename") or filename
            ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self.cdn[aid] = (name, blob, ctype)
            url = f"{self.base_url}/cdn/attachments/{channel.id}/{aid}/{name}"
            att = {"id": str(aid), "filename": name, "size": len(blob), "url": url, "proxy_url": url, "content_type": ctype}
            if meta.get("description"):
                att["description"] = meta["description"]
            out.append(att)
        return out

    def _too_large(self, channel: FakeChannel, files: list[tuple[str, str, bytes]]) -> web.Response | None:
        if any(len(blob) > channel.guild.filesize_limit for _, _, blob in files):
            return _error(413, 40005, "Request entity too large")
        return None

    def _store(self, message: FakeMessage) -> FakeMessage:
        self.messages[message.id] = message
        return message

    def _create(self, channel: FakeChannel, payload: dict[str, Any], files: list[tuple[str, str, bytes]], *, author: FakeUser, interaction: FakeInteraction | None = None) -> FakeMessage:
        data = self._message_data(channel, author, payload)
        data["attachments"] = self._attach(channel, payload, files, [])
        ephemeral = bool(data["flags"] & EPHEMERAL)
        if interaction is not None:
            data["webhook_id"] = str(self.app_id)
            data["application_id"] = str(self.app_id)
            data["interaction_metadata"] = {"id": str(interaction.id), "type": interaction.type, "user": interaction.user.payload(), "authorizing_integration_owners": {"0": str(channel.guild.id)}}
        return self._store(FakeMessage(data, channel, ephemeral=ephemeral, interaction=interaction, fake=self))

    def _edit(self, message: FakeMessage, payload: dict[str, Any], files: list[tuple[str, str, bytes]]) -> FakeMessage:
        data = message.data
        for key in ("content", "embeds", "components"):
            if key in payload:
                data[key] = payload[key] if payload[key] is not None else ([] if key != "content" else "")
        if "flags" in payload and payload["flags"] is not None:
            data["flags"] = (int(payload["flags"]) & ~LOADING) | (data.get("flags", 0) & EPHEMERAL)
        else:
            data["flags"] = data.get("flags", 0) & ~LOADING
        if "attachments" in payload or files:
            listed = payload.get("attachments")
            if listed is None:
                keep = data.get("attachments") or []
            else:
                ids = {str(a.get("id")) for a in listed}
                keep = [a for a in data.get("attachments") or [] if a["id"] in ids]
            data["attachments"] = self._attach(message.channel, payload, files, keep)
        data["edited_timestamp"] = _now_iso()
        message.edits.append(json.loads(json.dumps(data)))
        return message

    # --- internals: HTTP ----------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if request.path == "/gw" or request.path.startswith("/cdn/"):
            return await handler(request)
        path = request.path.removeprefix(API_PREFIX)
        payload: Any = None
        files: list[tuple[str, str, bytes]] = []
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    payload = json.loads(await part.text())  # type: ignore[union-attr]
                else:
                    files.append((part.name or "", part.filename or "", bytes(await part.read())))  # type: ignore[union-attr]
        elif request.can_read_body:
            raw = await request.read()
            payload = json.loads(raw) if raw else None
        rec = Recorded(request.method, path, dict(request.query), payload, files)
        self.requests.append(rec)
        request[REC] = rec
        try:
            response = self._injected(rec) or self._auth(request, path)
            if response is None:
                response = await handler(request)
        except web.HTTPNotFound:
            self.unhandled.append(rec)
            response = _error(404, 0, "404: Not Found")
        except web.HTTPMethodNotAllowed:
            self.unhandled.append(rec)
            response = _error(405, 0, "405: Method Not Allowed")
        rec.status = response.status
        await self._notify()
        return response

    def _injected(self, rec: Recorded) -> web.Response | None:
        target = rec.path + ("#files" if rec.files else "")
        for inj in self._injections:
            if inj.times > 0 and inj.method == rec.method and inj.pattern.search(target):
                inj.times -= 1
                return _json(inj.body, status=inj.status, headers=inj.headers)
        return None

    def _auth(self, request: web.Request, path: str) -> web.Response | None:
        if path.startswith(("/interactions/", "/webhooks/")):
            return None  # authenticated by the interaction token in the path
        if request.headers.get("Authorization") != f"Bot {self.token}":
            return _error(401, 0, "401: Unauthorized")
        return None

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    def _routes(self) -> list[tuple[str, str, Callable[[web.Request], Any]]]:
        return [
            ("GET", "/users/@me", self._me),
            ("GET", "/oauth2/applications/@me", self._application),
            ("GET", "/gateway", self._gateway_url),
            ("GET", "/gateway/bot", self._gateway_url),
            ("PUT", "/applications/{app}/commands", self._put_commands),
            ("GET", "/applications/{app}/commands", self._get_commands),
            ("PUT", "/applications/{app}/guilds/{guild}/commands", self._put_commands),
            ("GET", "/applications/{app}/guilds/{guild}/commands", self._get_commands),
            ("POST", "/interactions/{iid}/{token}/callback", self._callback),
            ("POST", "/webhooks/{app}/{token}", self._followup),
            ("GET", "/webhooks/{app}/{token}/messages/{mid}", self._webhook_message),
            ("PATCH", "/webhooks/{app}/{token}/messages/{mid}", self._webhook_message),
            ("DELETE", "/webhooks/{app}/{token}/messages/{mid}", self._webhook_message),
            ("GET", "/channels/{cid}", self._get_channel),
            ("POST", "/channels/{cid}/typing", self._typing),
            ("POST", "/channels/{cid}/messages", self._channel_post),
            ("GET", "/channels/{cid}/messages/{mid}", self._channel_message),
            ("PATCH", "/channels/{cid}/messages/{mid}", self._channel_message),
            ("DELETE", "/channels/{cid}/messages/{mid}", self._channel_message),
            ("POST", "/users/@me/channels", self._open_dm),
            ("GET", "/users/{uid}", self._get_user),
            ("DELETE", "/users/@me/guilds/{guild}", self._leave_guild),
        ]

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self.users.get(int(request.match_info["uid"])) if request.match_info["uid"].isdigit() else None
        return _json(user.payload()) if user is not None else _error(404, 10013, "Unknown User")

    async def _open_dm(self, request: web.Request) -> web.Response:
        user = self.users.get(int((request[REC].json or {}).get("recipient_id", 0)))
        if user is None:
            return _error(400, 50033, "Invalid Recipients")
        cid = next((c for c, u in self.dm_channels.items() if u is user), None) or self.mint()
        self.dm_channels[cid] = user
        return _json({"id": str(cid), "type": 1, "last_message_id": None, "recipients": [user.payload()]})

    async def _dm_post(self, cid: int, rec: Recorded) -> web.Response:
        user = self.dm_channels[cid]
        if not user.dms_open:
            return _error(403, 50007, "Cannot send messages to this user")
        payload = dict(rec.json or {})
        names = {str(a.get("id")): a.get("filename") for a in payload.get("attachments") or []}
        files = {names.get(f.removeprefix("files[").removesuffix("]")) or n: b for f, n, b in rec.files}
        self.dms.append(FakeDM(user, payload.get("content") or "", files))
        data = {"id": str(self.mint()), "channel_id": str(cid), "author": self.bot_user.payload(),
                "content": payload.get("content") or "", "timestamp": _now_iso(), "edited_timestamp": None,
                "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [],
                "embeds": [], "components": [], "pinned": False, "type": 0, "flags": 0}
        return _json(data)

    def dms_to(self, user: FakeUser) -> list[FakeDM]:
        return [m for m in self.dms if m.user is user]

    async def _leave_guild(self, request: web.Request) -> web.Response:
        guild = self.guilds.pop(int(request.match_info["guild"]), None)
        if guild is None:
            return _error(404, 10004, "Unknown Guild")
        self.left.append(guild.id)
        await self.dispatch("GUILD_DELETE", {"id": str(guild.id)})
        return web.Response(status=204)

    async def _me(self, request: web.Request) -> web.Response:
        return _json({**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0})

    async def _application(self, request: web.Request) -> web.Response:
        return _json({
            "id": str(self.app_id),
            "name": "famswap",
            "icon": None,
            "description": "",
            "bot_public": False,
            "bot_require_code_grant": False,
            "owner": self.users[next(iter(self.guilds.values())).owner.id].payload() if self.guilds else self.bot_user.payload(),
            "verify_key": "0" * 64,
            "flags": 0,
            "team": None,
            "interactions_endpoint_url": None,
            "summary": "",
        })

    async def _gateway_url(self, request: web.Request) -> web.Response:
        return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}})

    async def _put_commands(self, request: web.Request) -> web.Response:
        if int(request.match_info["app"]) != self.app_id:
            return _error(403, 50001, "Missing Access")
        guild = request.match_info.get("guild")
        out = []
        for cmd in request[REC].json or []:
            registered = {**cmd, "id": str(self.mint()), "application_id": str(self.app_id), "version": str(self.mint())}
            registered.setdefault("type", CHAT_INPUT)
            if registered.get("default_member_permissions") is not None:  # Discord answers it as a string
                registered["default_member_permissions"] = str(registered["default_member_permissions"])
            registered.setdefault("description", "")
            if guild:
                registered["guild_id"] = guild
            out.append(registered)
        self.commands[int(guild) if guild else None] = out
        return _json(out)

    async def _get_commands(self, request: web.Request) -> web.Response:
        guild = request.match_info.get("guild")
        return _json(self.commands.get(int(guild) if guild else None, []))

    def _interaction_for(self, request: web.Request) -> FakeInteraction | None:
        return self.interactions.get(request.match_info["token"])

    async def _callback(self, request: web.Request) -> web.Response:
        rec: Recorded = request[REC]
        ia = self._interaction_for(request)
        if ia is None or str(ia.id) != request.match_info["iid"]:
            return _error(404, 10062, "Unknown interaction")
        if time.monotonic() - ia.created > self.callback_deadline:
            return _error(404, 10062, "Unknown interaction")
        if ia.callbacks:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        body = rec.json or {}
        kind, data = body.get("type"), body.get("data") or {}
        if kind == 4 or kind == 5:
            if kind == 5:
                data = {"flags": LOADING | (int(data.get("flags") or 0) & EPHEMERAL)}
            elif rec.files and (resp := self._too_large(ia.channel, rec.files)):
                return resp
            ia.original = self._create(ia.channel, data, rec.files, author=self.bot_user, interaction=ia)
        elif kind in (6, 7) and ia.message is not None:
            ia.original = ia.message  # for a component, "@original" is then the message that carries it
            if kind == 7:
                self._edit(ia.message, data, rec.files)
        elif kind == 8:
            ia.choices = list(data.get("choices") or [])
        elif kind == 9:
            ia.modal = data
        elif kind not in (6, 7):
            return _error(400, 50035, f"Invalid Form Body: unknown callback type {kind}")
        ia.callbacks.append(body)
        if "with_response" not in rec.query:
            return web.Response(status=204)
        out: dict[str, Any] = {"interaction": {"id": str(ia.id), "type": ia.type}}
        if ia.original is not None and kind in (4, 5, 7):
            out["interaction"].update(
                response_message_id=str(ia.original.id),
                response_message_loading=kind == 5,
                response_message_ephemeral=ia.original.ephemeral,
            )
            out["resource"] = {"type": kind, "message": ia.original.data}
        return _json(out)

    def _webhook_interaction(self, request: web.Request) -> tuple[FakeInteraction | None, web.Response | None]:
        if int(request.match_info["app"]) != self.app_id:
            return None, _error(401, 50027, "Invalid Webhook Token")
        ia = self._interaction_for(request)
        if ia is None or ia.expired:
            return None, _error(401, 50027, "Invalid Webhook Token")
        if not ia.callbacks:
            return None, _error(404, 10015, "Unknown Webhook")
        return ia, None

    async def _followup(self, request: web.Request) -> web.Response:
        ia, err = self._webhook_interaction(request)
        if err is not None:
            return err
        assert ia is not None
        rec: Recorded = request[REC]
        if rec.files and (resp := self._too_large(ia.channel, rec.files)):
            return resp
        payload = dict(rec.json or {})
        if ia.original is not None and ia.original.loading:
            # The first follow-up after a "thinking" defer fills the deferred message; the defer chose ephemerality.
            message = self._edit(ia.original, payload, rec.files)
        else:
            message = self._create(ia.channel, payload, rec.files, author=self.bot_user, interaction=ia)
        ia.followups.append(message)
        return _json(message.data)

    async def _webhook_message(self, request: web.Request) -> web.Response:
        ia, err = self._webhook_interaction(request)
        if err is not None:
            return err
        assert ia is not None
        mid = request.match_info["mid"]
        if mid == "@original":
            message = ia.original
        else:
            message = next((m for m in [ia.original, *ia.followups] if m is not None and m.id == int(mid)), None)
        if message is None or message.deleted:
            return _error(404, 10008, "Unknown Message")
        rec: Recorded = request[REC]
        if request.method == "DELETE":
            message.deleted = True
            return web.Response(status=204)
        if request.method == "PATCH":
            if rec.files and (resp := self._too_large(ia.channel, rec.files)):
                return resp
            self._edit(message, rec.json or {}, rec.files)
        return _json(message.data)

    def _channel(self, request: web.Request) -> FakeChannel | None:
        return self.channels.get(int(request.match_info["cid"]))

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        return _json(channel.payload())

    async def _typing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _channel_post(self, request: web.Request) -> web.Response:
        if int(request.match_info["cid"]) in self.dm_channels:
            return await self._dm_post(int(request.match_info["cid"]), request[REC])
        channel = self._channel(request)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        rec: Recorded = request[REC]
        if rec.files and (resp := self._too_large(channel, rec.files)):
            return resp
        payload = dict(rec.json or {})
        payload["flags"] = int(payload.get("flags") or 0) & ~EPHEMERAL  # bot messages in channels are public
        message = self._create(channel, payload, rec.files, author=self.bot_user)
        return _json(message.data)

    async def _channel_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        message = self.messages.get(int(request.match_info["mid"]))
        if message is None or message.deleted or message.ephemeral or message.channel is not channel:
            return _error(404, 10008, "Unknown Message")
        if request.method == "GET":
            return _json(message.data)
        if message.author_id != self.bot_user.id:
            return _error(403, 50005, "Cannot edit a message authored by another user")
        if request.method == "DELETE":
            message.deleted = True
            return web.Response(status=204)
        if message.id in self.edit_limited:
            return _error(400, 30046, "Maximum number of edits to messages older than 1 hour reached. Try again later.")
        rec: Recorded = request[REC]
        if rec.files and (resp := self._too_large(channel, rec.files)):
            return resp
        return _json(self._edit(message, rec.json or {}, rec.files).data)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        entry = self.cdn.get(int(request.match_info["id"]))
        if entry is None:
            return web.Response(status=404, text="Not Found")
        _, blob, ctype = entry
        return web.Response(body=blob, headers={"Content-Type": ctype})

    # --- internals: gateway -------------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH to every identified session (queued for replay while one is disconnected)."""
        for session in list(self._sessions.values()):
            await self._send_event(session, event, data)

    async def _send_event(self, session: _GatewaySession, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.sent.append(frame)
        if session.ws is not None and not session.ws.closed:
            await session.ws.send_str(json.dumps(frame))

    async def connected(self, timeout: float = 10.0) -> None:
        """Wait until a client has identified (or resumed) and holds an open gateway connection."""
        await self.wait_for(lambda: any(s.ws is not None and not s.ws.closed for s in self._sessions.values()), timeout=timeout, what="a gateway connection")

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        session: _GatewaySession | None = None
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            op, d = frame.get("op"), frame.get("d")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                self.identifies.append(d)
                if d.get("token") != self.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                session = _GatewaySession(uuid.uuid4().hex, ws)
                self._sessions[session.id] = session
                await self._send_event(session, "READY", {
                    "v": 10,
                    "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
                    "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
                    "session_id": session.id,
                    "resume_gateway_url": self.gateway_url,
                    "application": {"id": str(self.app_id), "flags": 0},
                    "shard": [0, 1],
                })
                for guild in self.guilds.values():
                    await self._send_event(session, "GUILD_CREATE", guild.payload())
            elif op == 6:
                self.resumes.append(d)
                session = self._sessions.get(d.get("session_id", ""))
                if session is None or d.get("token") != self.token:
                    await ws.send_str(json.dumps({"op": 9, "d": False}))
                    continue
                session.ws = ws
                for frame in session.sent:
                    if frame["s"] > (d.get("seq") or 0):
                        await ws.send_str(json.dumps(frame))
                await self._send_event(session, "RESUMED", {})
            await self._notify()
        if session is not None and session.ws is ws:
            session.ws = None
            if ws.close_code == 1000:  # a clean close ends the session: nothing to resume
                self._sessions.pop(session.id, None)
        await self._notify()
        return ws
