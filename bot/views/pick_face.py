"""Buttons under a clip's numbered contact sheet: pick which face to replace. They keep working after a restart."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bot.replies import reply_error

if TYPE_CHECKING:
    from bot.app import FamswapBot


class PickFace(discord.ui.DynamicItem[discord.ui.Button], template=r"famswap:pick:(?P<job>\d+):(?P<face>\d+)"):
    """"Face N" for job J. The custom id carries both, so no view state has to survive a restart."""

    def __init__(self, job_id: int, face: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"Face {face}", style=discord.ButtonStyle.primary, custom_id=f"famswap:pick:{job_id}:{face}"
            )
        )
        self.job_id = job_id
        self.face = face

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /) -> PickFace:
        return cls(int(match["job"]), int(match["face"]))

    async def callback(self, interaction: discord.Interaction[FamswapBot]) -> Any:  # type: ignore[override]
        cog: Any = interaction.client.get_cog("Swap")
        try:
            await cog.pick_face(interaction, self.job_id, self.face)
        except Exception as exc:
            await reply_error(interaction, exc)


def pick_face_view(job_id: int, faces: int) -> discord.ui.View:
    """One button per face (Discord allows 25 buttons in a message)."""
    view = discord.ui.View(timeout=None)
    for n in range(1, min(faces, 25) + 1):
        view.add_item(PickFace(job_id, n))
    return view
