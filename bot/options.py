"""Command options that name an identity: autocomplete offers only what the user may use here; typing resolves too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands

from common.errors import NotFound
from storage import Identity

if TYPE_CHECKING:
    from bot.app import FamswapBot

Scope = Literal["usable", "owned", "mine"]


def identity_label(identity: Identity, user_id: int) -> str:
    """How an identity reads in a choice list: own ones bare, others with why the user sees them."""
    if identity.owner_id == user_id:
        label = identity.display_name + (" · enrolled on their behalf" if identity.on_behalf else "")
    elif identity.subject_user_id == user_id:
        label = f"{identity.display_name} · you, enrolled by someone else"
    else:
        label = f"{identity.display_name} · shared with you"
    return label[:100]


class IdentityOption(app_commands.Transformer):
    """An identity option. ``usable``: any identity the user may swap with (the permission is checked);
    ``owned``: the user's own ones (share/unshare); ``mine``: own or of which they are the subject (forget/claim).
    The storage call that follows enforces its own rule, so resolving here only has to find the identity."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.string

    def _keep(self, identity: Identity, user_id: int) -> bool:
        if self.scope == "owned":
            return identity.owner_id == user_id
        if self.scope == "mine":
            return user_id in (identity.owner_id, identity.subject_user_id)
        return True

    async def autocomplete(  # type: ignore[override]
        self, interaction: discord.Interaction[FamswapBot], value: str
    ) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None:
            return []
        user_id = interaction.user.id
        found = await interaction.client.store.list_identities(interaction.guild_id, user_id, prefix=value, limit=25)
        return [
            app_commands.Choice(name=identity_label(i, user_id), value=str(i.id)) for i in found if self._keep(i, user_id)
        ][:25]

    async def transform(self, interaction: discord.Interaction[FamswapBot], value: str) -> Identity:  # type: ignore[override]
        store = interaction.client.store
        guild_id, user_id = interaction.guild_id, interaction.user.id
        if guild_id is None:
            raise NotFound("Identities live in a server.", hint="Use this command in your family's server.")
        value = value.strip()
        identity: Identity | None = None
        if value.isdigit():  # what autocomplete sends; a name made of digits falls back to a name lookup
            try:
                identity = await store.get_identity(guild_id, int(value))
            except NotFound:
                identity = None
        if identity is None:
            identity = await store.find_identity(guild_id, user_id, value)
        if self.scope == "usable":
            identity = await store.check_can_use(guild_id, identity.id, user_id)
        return identity


UsableIdentity = app_commands.Transform[Identity, IdentityOption("usable")]
OwnedIdentity = app_commands.Transform[Identity, IdentityOption("owned")]
MyIdentity = app_commands.Transform[Identity, IdentityOption("mine")]
