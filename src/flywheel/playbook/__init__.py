"""Playbooks and the decide path: what the product receives for a context."""

from flywheel.playbook.book import Playbook
from flywheel.playbook.decide import Decider, Decision
from flywheel.playbook.publish import LearnResult, learn, restore

__all__ = [
    "Decider",
    "Decision",
    "LearnResult",
    "Playbook",
    "learn",
    "restore",
]
