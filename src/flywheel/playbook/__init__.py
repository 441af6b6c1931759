"""Playbooks and the decide path: what the product receives for a context."""

from flywheel.playbook.decide import Decider, Decision, IdFactory

__all__ = ["Decider", "Decision", "IdFactory"]
