"""seatbelt: checks that stop a wheel from learning from wrong data or publishing a worse policy.

So far: off-policy estimates of a policy's value from logged decisions and their propensities
(:mod:`~flywheel.seatbelt.offpolicy`), and drift and sample-ratio monitors
(:mod:`~flywheel.seatbelt.monitors`).
"""

from flywheel.seatbelt.offpolicy import Estimate, doubly_robust, ips, snips

__all__ = ["Estimate", "doubly_robust", "ips", "snips"]
