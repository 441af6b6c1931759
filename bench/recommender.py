"""A simulated recommender log: the shape of a real public one, with a known truth.

Each impression shows one of ``items`` items at one of three positions to a user described by
four hashed features of ~30 values each. Clicks are rare (about 0.4%): the log-odds are a
base rate, a position effect (the top slot gets more), an item quality, and an item × feature
affinity on the first feature (what a recommender learns). The logging policy is ``uniform``
(every item equally likely) or ``thompson`` (a fixed, skewed policy that favours items an
earlier ranker liked, with exact propensities), so off-policy estimates have something to
correct.

Used by ``bench/recommend.py`` (learn and open times), ``bench/evaluate.py`` (calibration of
the offline estimators) and the tests that need a realistic big-knob log. Everything is a
pure function of the seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FEATURES = ("u1", "u2", "u3", "u4")
POSITIONS = (1, 2, 3)


def item_name(i: int) -> str:
    return f"item{i:02d}"


def hashed(feature: str, level: int) -> str:
    """A stable, hash-looking value for a feature level (as a real log's hashed features)."""
    salt = FEATURES.index(feature) + 1
    return f"{(level * 2654435761 + salt * 40503) & 0xFFFFFF:06x}"


@dataclass
class World:
    """The hidden truth of one simulated recommender."""

    seed: int = 0
    items: int = 80
    levels: int = 30
    base_rate: float = 0.004
    rng: np.random.Generator = field(init=False, repr=False)
    quality: np.ndarray = field(init=False, repr=False)
    affinity: np.ndarray = field(init=False, repr=False)
    position: np.ndarray = field(init=False, repr=False)
    logging: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.quality = self.rng.normal(0.0, 0.5, self.items)
        self.affinity = self.rng.normal(0.0, 0.6, (self.items, self.levels))
        self.position = np.array([0.4, 0.0, -0.4])
        # The skewed logging policy: softmax of a noisy view of quality (an earlier ranker).
        view = self.quality + self.rng.normal(0.0, 0.5, self.items)
        weights = np.exp(1.5 * (view - view.max()))
        self.logging = 0.9 * weights / weights.sum() + 0.1 / self.items

    def spec(self, *, open_features: bool = False, name: str = "recommender") -> dict[str, Any]:
        """A spec for this world: the item knob, the hashed features and the position."""
        context: dict[str, Any] = {}
        for f in FEATURES:
            values = [hashed(f, v) for v in range(self.levels)]
            context[f] = {"type": "category", "open": True} if open_features else values
        context["position"] = list(POSITIONS)
        return {
            "name": name,
            "knobs": {"item": [item_name(i) for i in range(self.items)]},
            "context": context,
            "reward": {"formula": "click", "window": "1d", "missing": 0},
            "signals": {"click": "max"},
            "storage": {"url": "duckdb:///:memory:"},
        }

    def contexts(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Context level codes of ``n`` impressions (features skewed like real traffic)."""
        weights = 1.0 / np.arange(1, self.levels + 1) ** 0.8
        weights /= weights.sum()
        codes = {f: rng.choice(self.levels, n, p=weights) for f in FEATURES}
        codes["position"] = rng.integers(0, len(POSITIONS), n)
        return codes

    def click_rate(self, codes: Mapping[str, np.ndarray], items: np.ndarray) -> np.ndarray:
        """The true click probability of showing ``items`` in the contexts ``codes``."""
        logit = (
            np.log(self.base_rate / (1 - self.base_rate))
            + self.position[codes["position"]]
            + self.quality[items]
            + self.affinity[items, codes["u1"]]
        )
        rate: np.ndarray = 1.0 / (1.0 + np.exp(-logit))
        return rate

    def log(self, n: int, policy: str = "uniform", seed: int = 0) -> Log:
        """``n`` logged impressions under the ``uniform`` or the skewed ``thompson`` policy."""
        rng = np.random.default_rng((self.seed, seed))
        codes = self.contexts(n, rng)
        if policy == "uniform":
            probs = np.full(self.items, 1.0 / self.items)
        elif policy == "thompson":
            probs = self.logging
        else:
            raise ValueError(f"policy must be 'uniform' or 'thompson', not {policy!r}")
        items = rng.choice(self.items, n, p=probs)
        rate = self.click_rate(codes, items)
        clicks = (rng.random(n) < rate).astype(np.int64)
        return Log(self, codes, items, probs[items], clicks, rate, policy)

    def value(self, n: int, target: np.ndarray, seed: int = 1) -> float:
        """The true click rate of a policy that shows item ``target[u1, position]`` (a table of
        item codes by first feature and position), on fresh traffic of size ``n``."""
        rng = np.random.default_rng((self.seed, seed, 99))
        codes = self.contexts(n, rng)
        items = target[codes["u1"], codes["position"]]
        return float(self.click_rate(codes, items).mean())


@dataclass(frozen=True)
class Log:
    """Logged impressions: context codes, the item shown, its propensity, the click."""

    world: World
    codes: Mapping[str, np.ndarray]
    items: np.ndarray
    propensity: np.ndarray
    clicks: np.ndarray
    rate: np.ndarray  # the true click probability of each logged impression
    policy: str

    def __len__(self) -> int:
        return len(self.items)

    def rows(self, start_ts: float = 1.5e9, step: float = 60.0) -> list[dict[str, Any]]:
        """The impressions as rows for ``wheel.log_many`` (outside policy, exact propensity)."""
        out = []
        for i in range(len(self)):
            context: dict[str, Any] = {f: hashed(f, int(self.codes[f][i])) for f in FEATURES}
            context["position"] = POSITIONS[int(self.codes["position"][i])]
            out.append(
                {
                    "context": context,
                    "params": {"item": item_name(int(self.items[i]))},
                    "results": {"click": int(self.clicks[i])},
                    "unit": f"user{i % 5000}",
                    "ts": start_ts + i * step,
                    "policy": f"ranker-{self.policy}",
                    "propensity": float(self.propensity[i]),
                }
            )
        return out

    def table(self, start_ts: float = 1.5e9, step: float = 60.0) -> dict[str, list[Any]]:
        """The same rows as columns (for an import from Parquet or CSV)."""
        n = len(self)
        columns: dict[str, list[Any]] = {
            f: [hashed(f, int(v)) for v in self.codes[f]] for f in FEATURES
        }
        columns["position"] = [POSITIONS[int(v)] for v in self.codes["position"]]
        columns["item"] = [item_name(int(v)) for v in self.items]
        columns["click"] = self.clicks.tolist()
        columns["propensity"] = self.propensity.tolist()
        columns["policy"] = [f"ranker-{self.policy}"] * n
        columns["unit"] = [f"user{i % 5000}" for i in range(n)]
        columns["ts"] = [start_ts + i * step for i in range(n)]
        return columns
