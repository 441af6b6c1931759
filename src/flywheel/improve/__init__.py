"""improve: the loops that make new values for an AI product out of its own records.

An AI product's decisions carry what it was asked (``input``) and what it answered
(``output``); its people rate the answers and edit the drafts. :mod:`.datasets` turns those
records into training sets for a new model (supervised fine-tuning, preferences, KTO), each
with its lineage, and says when one is large enough to tune on. :mod:`.themes` clusters the
negative feedback into themes and proposes a revised prompt that addresses them.
:mod:`.triggers` watches a satisfaction signal between cycles and, once per fall below its
threshold, alerts or starts a learn cycle.
"""

from __future__ import annotations

from flywheel.improve.datasets import (
    KINDS,
    Kind,
    Lineage,
    Readiness,
    TrainingSet,
    build,
    kto,
    preferences,
    readiness,
    ready,
    sft,
)
from flywheel.improve.themes import Proposal, Theme, Themes, propose
from flywheel.improve.triggers import Reading, measure, satisfaction

__all__ = [
    "KINDS",
    "Kind",
    "Lineage",
    "Proposal",
    "Readiness",
    "Reading",
    "Theme",
    "Themes",
    "TrainingSet",
    "build",
    "kto",
    "measure",
    "preferences",
    "propose",
    "readiness",
    "ready",
    "satisfaction",
    "sft",
]
