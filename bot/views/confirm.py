"""A yes/no question only its asker can answer (consent for on-behalf enrollment, forgetting, purging)."""

from __future__ import annotations

import discord

from bot.replies import reply_error


class Confirm(discord.ui.View):
    """Two buttons; after ``await view.wait()``, ``value`` is True (confirmed), False (declined) or None (timed out),
    and ``pressed`` is the button interaction, already acknowledged, for editing the question's message."""

    def __init__(self, user_id: int, *, confirm_label: str, cancel_label: str = "Cancel", timeout: float = 600.0,
                 danger: bool = False) -> None:
        super().__init__(timeout=timeout)
        self.user_id = user_id
        self.value: bool | None = None
        self.pressed: discord.Interaction | None = None
        self.confirm.label = confirm_label
        self.confirm.style = discord.ButtonStyle.danger if danger else discord.ButtonStyle.success
        self.cancel.label = cancel_label

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.user_id:
            await interaction.response.send_message("This question is for someone else.", ephemeral=True)
            return False
        return True

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        await reply_error(interaction, error)

    async def _answer(self, interaction: discord.Interaction, value: bool) -> None:
        self.value = value
        self.pressed = interaction
        # Acknowledge at once and drop the buttons; the asker then edits the message with the outcome.
        await interaction.response.edit_message(view=None)
        self.stop()

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.success)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._answer(interaction, True)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._answer(interaction, False)
