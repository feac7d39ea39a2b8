"""The one device resolver: ``auto`` (or None) is ``cuda`` when torch sees a GPU, else ``cpu``; any other name
(``cpu``, ``cuda``, ``cuda:N``) is returned as given. torch is imported only to answer ``auto``."""

from __future__ import annotations


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
