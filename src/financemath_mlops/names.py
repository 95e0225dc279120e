"""The real name a mistyped one most likely meant: one rule for every "closest: ..." we print.

Settings, environment variables, LightGBM parameters, topics, columns and registered models all
answer a typo with the closest real name, case ignored, by difflib's ratio (cutoff 0.6), so the
suggestions read the same everywhere. Costs O(len(names)) ratio computations of short strings.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.6


def closest(name: str, names: Iterable[str]) -> str | None:
    """The name in ``names`` that ``name`` most likely meant (case ignored), or None."""
    by_key = {candidate.casefold(): candidate for candidate in sorted(names)}
    match = difflib.get_close_matches(name.casefold(), list(by_key), n=1, cutoff=CUTOFF)
    return by_key[match[0]] if match else None


def closest_first(name: str, names: Iterable[str]) -> list[str]:
    """``names`` ordered by likeness to ``name`` (a misspelt name finds the real one first)."""

    def likeness(candidate: str) -> float:
        return difflib.SequenceMatcher(None, name.casefold(), candidate.casefold()).ratio()

    return sorted(names, key=lambda n: (-likeness(n), n))
