"""The hidden world of the forecast demo: a simulated retailer, and the forecasting methods.

Weekly unit sales per store and product category. A store belongs to a store type (mall,
street, outlet); a segment is a store type × a category, and each segment has several series
(one per store). What drives each category, before the break:

- grocery: a stable level with a lot of week-to-week noise (weather, baskets). Only
  averaging helps: a long moving average or a slow exponential smoothing (the two are
  near-equivalent there, by construction of the window knob: see ``forecast.toml``).
- apparel: a quarterly clearance sale in the last two weeks of every 13-week quarter, on a
  steady level: the same week last quarter is the best guess (seasonal naive, 13 weeks).
- electronics: a fixed annual calendar of promotions and holidays (Black Friday, Christmas,
  back to school, ...): the same week last year (seasonal naive, 52 weeks).
- garden: a strong spring-and-summer season with its bank-holiday peaks, also annual.

Store types scale the noise: malls are the steadiest, outlets the noisiest.

The structural break, halfway through: apparel and electronics move to everyday low prices.
Their promotions stop, week-to-week noise drops, and their demand follows the market from
then on: electronics grows (a new product generation), apparel declines (moving online), and
both wander with it. Last year's or last quarter's week is now the wrong guess and a smoother
lags behind the moving level: last week's sales (naive) wins there.

The methods come from statsforecast (Nixtla): ``Naive``, ``SeasonalNaive``,
``WindowAverage`` and ``SimpleExponentialSmoothing``, each fitted on a series' history and
asked for one step ahead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from statsforecast.models import (
    Naive,
    SeasonalNaive,
    SimpleExponentialSmoothing,
    WindowAverage,
)

STORE_TYPES = ("mall", "street", "outlet")
CATEGORIES = ("grocery", "apparel", "electronics", "garden")
BROKEN = ("apparel", "electronics")  # the categories the break changes
WEEKS_PER_YEAR = 52
HISTORY = 64  # weeks of sales before the first forecast: seasonal naive needs a year of them
MAX_APE = 1.0  # an error is counted at most as 100%: one odd week cannot dominate a mean

# units sold per store in a typical week, and the log-scale noise of a mall store
BASE = {"grocery": 800.0, "apparel": 150.0, "electronics": 60.0, "garden": 120.0}
NOISE = {"grocery": 0.14, "apparel": 0.05, "electronics": 0.05, "garden": 0.05}
TYPE_NOISE = {"mall": 0.8, "street": 1.0, "outlet": 1.3}
DRIFT = 0.005  # weekly random walk of every store's level: a slow, realistic wander

# electronics' promotional calendar: week of the year -> log lift (January is a slump)
ELECTRONICS_CALENDAR = {
    0: -0.35, 1: -0.25, 6: 0.3, 14: 0.35, 22: 0.3, 27: 0.45, 34: 0.45, 35: 0.3,
    40: 0.3, 47: 0.95, 48: 0.5, 50: 0.6, 51: 0.8,
}  # fmt: skip
GARDEN_PEAKS = {14: 0.3, 18: 0.25, 21: 0.25}  # Easter and the bank holidays
CLEARANCE = {11: 0.55, 12: 0.35}  # apparel: the last two weeks of each 13-week quarter

# after the break (apparel and electronics): the market's weekly trend, how much it wanders,
# how much each store wanders around it, and the (lower) noise without promotions
TREND = {"apparel": -0.02, "electronics": 0.02}
MARKET_WANDER = 0.03
STORE_WANDER = 0.04
NOISE_AFTER = 0.015


def pattern(category: str, week: int) -> float:
    """The calendar's log lift for a category in an absolute week (before the break)."""
    of_year = week % WEEKS_PER_YEAR
    if category == "apparel":
        return CLEARANCE.get(week % 13, 0.0)
    if category == "electronics":
        return ELECTRONICS_CALENDAR.get(of_year, 0.0)
    if category == "garden":
        season = 0.0
        if 9 <= of_year <= 35:  # a raised cosine from early March to late August
            season = 1.3 * math.sin(math.pi * (of_year - 9) / 26) ** 2
        return season - 0.6 + GARDEN_PEAKS.get(of_year, 0.0)
    return 0.0


@dataclass(frozen=True)
class Series:
    """One store's weekly sales of one category: history first, then the simulated weeks."""

    name: str
    store_type: str
    category: str
    sales: np.ndarray  # units, one per week from the first week of history

    @property
    def context(self) -> dict[str, str]:
        return {"store_type": self.store_type, "category": self.category}

    @property
    def segment(self) -> str:
        return f"{self.store_type}/{self.category}"


@dataclass
class Retailer:
    """The simulated retailer: ``stores`` stores of each type, each selling every category,
    for ``HISTORY`` weeks of history and then ``weeks`` weeks of forecasts, with the break
    halfway through them. Everything is drawn from ``seed``."""

    seed: int = 7
    weeks: int = 96
    stores: int = 10
    series: list[Series] = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        total = HISTORY + self.weeks
        markets = {c: _market(rng, c, total, self.cut) for c in CATEGORIES}
        self.series = [
            _series(rng, f"{kind}-{i + 1:02d}/{category}", kind, category, markets, self.cut)
            for kind in STORE_TYPES
            for i in range(self.stores)
            for category in CATEGORIES
        ]

    @property
    def break_week(self) -> int:
        """The forecast week (from 0) the break starts in."""
        return self.weeks // 2

    @property
    def cut(self) -> int:
        """The same week counted from the first week of history."""
        return HISTORY + self.break_week


def _market(rng: np.random.Generator, category: str, total: int, cut: int) -> np.ndarray:
    """The category's market level after the break (log scale, zero before it)."""
    steps = np.zeros(total)
    if category in BROKEN:
        after = total - cut
        steps[cut:] = TREND[category] + rng.normal(0.0, MARKET_WANDER, after)
    return np.cumsum(steps)


def _series(
    rng: np.random.Generator,
    name: str,
    kind: str,
    category: str,
    markets: Mapping[str, np.ndarray],
    cut: int,
) -> Series:
    total = len(markets[category])
    weeks = np.arange(total)
    size = rng.lognormal(0.0, 0.35)
    level = np.log(BASE[category] * size) + np.cumsum(rng.normal(0.0, DRIFT, total))
    calendar = np.array([pattern(category, int(w)) for w in weeks])
    noise = rng.normal(0.0, NOISE[category] * TYPE_NOISE[kind], total)
    if category in BROKEN:
        after = weeks >= cut
        wander = np.cumsum(np.where(after, rng.normal(0.0, STORE_WANDER, total), 0.0))
        calendar = np.where(after, 0.0, calendar)
        quiet = rng.normal(0.0, NOISE_AFTER * TYPE_NOISE[kind], total)
        noise = np.where(after, quiet, noise)
        level = level + markets[category] + wander
    units = np.maximum(1.0, np.round(np.exp(level + calendar + noise)))
    return Series(name, kind, category, units)


# --- the forecasting methods -----------------------------------------------------------------


Model = Naive | SeasonalNaive | WindowAverage | SimpleExponentialSmoothing


def model(params: Mapping[str, Any]) -> Model:
    """The statsforecast model for a combination of the knobs (see ``forecast.toml``)."""
    method, window = params["method"], int(params["window"])
    if method == "naive":
        return Naive()
    if method == "seasonal_naive":
        return SeasonalNaive(season_length=int(params["season"]))
    if method == "moving_average":
        return WindowAverage(window_size=window)
    if method == "exp_smoothing":
        # the classical span equivalence: as much smoothing as a moving average of `window`
        return SimpleExponentialSmoothing(alpha=2.0 / (window + 1))
    raise ValueError(f"unknown method {method!r}")


def forecast(history: np.ndarray, params: Mapping[str, Any]) -> float:
    """Next week's sales from the weeks so far."""
    return float(model(params).forecast(history, h=1)["mean"][0])


def ape(actual: float, predicted: float) -> float:
    """The absolute percentage error, capped at ``MAX_APE``."""
    return min(MAX_APE, abs(actual - predicted) / actual)


def errors(series: Sequence[Series], combos: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The APE of every combination on every series in every forecast week (the weeks after
    the first ``HISTORY``): ``[combination, series, week]``. What each choice would give."""
    models = [model(p) for p in combos]
    weeks = min(len(s.sales) for s in series) - HISTORY
    out = np.empty((len(combos), len(series), weeks))
    for s, one in enumerate(series):
        for week in range(weeks):
            past = one.sales[: HISTORY + week]
            actual = float(one.sales[HISTORY + week])
            for c, m in enumerate(models):
                out[c, s, week] = ape(actual, float(m.forecast(past, h=1)["mean"][0]))
    return out
