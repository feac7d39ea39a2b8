"""The form the "Enroll faces from this message" menu opens: whose face is in these photos?"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import discord

from bot.replies import reply_error

OnSubmit = Callable[[discord.Interaction, str | None], Awaitable[None]]


class WhoseFace(discord.ui.Modal, title="Enroll faces from this message"):
    name: discord.ui.TextInput = discord.ui.TextInput(
        label="Whose face is it? (empty: mine)",
        placeholder="e.g. Grandma — leave empty if these are photos of you",
        required=False,
        max_length=40,
    )

    def __init__(self, on_submit: OnSubmit) -> None:
        super().__init__(timeout=600.0)
        self._on_submit = on_submit

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._on_submit(interaction, self.name.value.strip() or None)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await reply_error(interaction, error)
