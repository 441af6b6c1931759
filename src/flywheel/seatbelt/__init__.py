"""seatbelt: checks that stop a wheel from learning from wrong data or publishing a worse policy.

- :mod:`~flywheel.seatbelt.quality`: ``[quality]`` rules and the quarantine;
- :mod:`~flywheel.seatbelt.monitors`: drift, sample-ratio mismatch, volume and staleness;
- :mod:`~flywheel.seatbelt.offpolicy`: IPS, SNIPS and doubly robust policy values;
- :mod:`~flywheel.seatbelt.gate`: the checks a learn cycle passes before it publishes;
- :mod:`~flywheel.seatbelt.guard`: the negative-loop guard's sequential test;
- :mod:`~flywheel.seatbelt.breaker`: the halted state and the audit trail.
"""

from flywheel.seatbelt.offpolicy import Estimate, doubly_robust, ips, snips

__all__ = ["Estimate", "doubly_robust", "ips", "snips"]
