"""improve: the loops that make new values for an AI product out of its own records.

An AI product's decisions carry what it was asked (``input``) and what it answered
(``output``); its people rate the answers and edit the drafts. :mod:`.datasets` turns those
records into training sets for a new model (supervised fine-tuning, preferences, KTO), each
with its lineage, and says when one is large enough to tune on.
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

__all__ = [
    "KINDS",
    "Kind",
    "Lineage",
    "Readiness",
    "TrainingSet",
    "build",
    "kto",
    "preferences",
    "readiness",
    "ready",
    "sft",
]
