"""learn: one Bayesian interaction model that is both the analysis and the policy.

- :mod:`~flywheel.learn.design` encodes context features and knobs into model terms;
- :mod:`~flywheel.learn.cells` holds the sufficient statistics the model is fitted on;
- :mod:`~flywheel.learn.model` fits the posterior (Newton / IRLS, Laplace, empirical Bayes);
- :mod:`~flywheel.learn.policy` turns the posterior into per-segment serving tables
  (Thompson sampling over posterior draws, with an exploration floor and cap).
"""

from flywheel.learn.cells import Cells
from flywheel.learn.design import Design
from flywheel.learn.model import Posterior, fit
from flywheel.learn.policy import SegmentPolicy, segment_policy

__all__ = ["Cells", "Design", "Posterior", "SegmentPolicy", "fit", "segment_policy"]
