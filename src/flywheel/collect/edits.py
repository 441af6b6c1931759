"""Edits of an AI draft: the diff a person made and how far they moved the text."""

from __future__ import annotations

import difflib

from rapidfuzz.distance import Levenshtein


def edit_distance(draft: str, final: str) -> float:
    """Levenshtein distance divided by the longer text's length: 0 unchanged, 1 rewritten.

    >>> edit_distance("the cat", "the cat"), edit_distance("", "new"), edit_distance("abcd", "abXd")
    (0.0, 1.0, 0.25)
    """
    return float(Levenshtein.normalized_distance(draft, final))


def unified_diff(draft: str, final: str) -> str:
    """A line diff (``draft`` to ``final``) in unified format, empty when nothing changed."""
    lines = difflib.unified_diff(
        draft.splitlines(keepends=True), final.splitlines(keepends=True), "draft", "final", n=1
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
