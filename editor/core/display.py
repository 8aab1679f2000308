"""The photo as a person sees it: its display copy, scaled down to `DISPLAY_MAX_SIDE` when larger.
"""
from __future__ import annotations

DISPLAY_MAX_SIDE = 1280  # larger photos are shown scaled down; edits always use the original


def display_scale(width: int, height: int, max_side: int = DISPLAY_MAX_SIDE) -> float:
    """Display pixels per original pixel (1.0 for photos that fit)."""
    return min(1.0, max_side / max(width, height))
