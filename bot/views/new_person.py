"""Buttons under "these photos don't look like NAME": add them anyway, or leave them out. They keep working after a
restart (the custom id carries the job that asked)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bot.replies import reply_error

if TYPE_CHECKING:
    from bot.app import FamswapBot


class AddAnyway(discord.ui.DynamicItem[discord.ui.Button], template=r"famswap:newface:(?P<job>\d+):(?P<add>[01])"):
    """"Add anyway" (add=1) or "Leave them out" (add=0) for the enrollment job J that asked."""

    def __init__(self, job_id: int, add: bool) -> None:
        super().__init__(
            discord.ui.Button(
                label="Add anyway" if add else "Leave them out",
                style=discord.ButtonStyle.danger if add else discord.ButtonStyle.secondary,
                custom_id=f"famswap:newface:{job_id}:{int(add)}",
            )
        )
        self.job_id = job_id
        self.add = add

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> AddAnyway:
        return cls(int(match["job"]), match["add"] == "1")

    async def callback(self, interaction: discord.Interaction[FamswapBot]) -> Any:  # type: ignore[override]
        cog: Any = interaction.client.get_cog("Enroll")
        try:
            await cog.answer_new_person(interaction, self.job_id, self.add)
        except Exception as exc:
            await reply_error(interaction, exc)


def add_anyway_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(AddAnyway(job_id, True))
    view.add_item(AddAnyway(job_id, False))
    return view
