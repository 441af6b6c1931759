"""A simulated CRM: leads arrive, a follow-up is made, deals close weeks later, and the data
is as dirty as real CRM data.

The hidden truth is a close probability per lead and follow-up, with effects that depend on
the lead: calls close large accounts and emails small ones, each industry answers to its own
offer (trials for software, discounts for retail, demos for manufacturing and finance),
inbound leads want an answer the same day and cold outbound ones some room. Deal value
depends on the company's size and, a little, on the offer (a discount gives some away, a demo
sells a bigger package). Nothing here is visible to Flywheel: it sees the leads, its own
follow-ups and what the CRM reports at close.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import product
from typing import Any

INDUSTRIES = ("saas", "retail", "finance", "manufacturing")
SIZES = ("small", "mid", "large")
REGIONS = ("na", "emea", "apac")
SOURCES = ("inbound", "outbound", "referral", "event")
KNOBS = {
    "channel": ("email", "call", "linkedin"),
    "timing": ("same_day", "next_day", "next_week"),
    "offer": ("discount", "trial", "demo"),
}
# how often each value comes: the lead mix
MIX = {
    "industry": dict(zip(INDUSTRIES, (0.35, 0.25, 0.2, 0.2), strict=True)),
    "size": dict(zip(SIZES, (0.5, 0.35, 0.15), strict=True)),
    "region": dict(zip(REGIONS, (0.45, 0.35, 0.2), strict=True)),
    "source": dict(zip(SOURCES, (0.35, 0.3, 0.15, 0.2), strict=True)),
}
DEAL = {"small": 8_000.0, "mid": 30_000.0, "large": 120_000.0}  # median deal value
OFFER_VALUE = {"discount": 0.8, "trial": 1.0, "demo": 1.1}

# How often each kind of dirt gets into the CRM's data (about 6% of leads in all).
DIRT = {
    "negative amount": 0.01,  # a refund typed into the amount field
    "closed before created": 0.01,  # dates swapped by an import
    "unknown stage": 0.015,  # 'on hold', 'Closed?': not an outcome
    "probability above 100": 0.01,  # a percentage typed as 150
    "source in capitals": 0.01,  # an integration writes 'Inbound'
    "duplicate lead id": 0.01,  # the same lead created twice
}


def close_logit(lead: Mapping[str, Any], followup: Mapping[str, Any]) -> float:
    """The hidden truth: log-odds that the lead is won with this follow-up."""
    size, industry, source = lead["size"], lead["industry"], lead["source"]
    channel, timing, offer = followup["channel"], followup["timing"], followup["offer"]
    logit = -1.9
    logit += {"saas": 0.2, "retail": -0.1, "finance": 0.0, "manufacturing": -0.2}[industry]
    logit += {"small": 0.1, "mid": 0.0, "large": -0.3}[size]
    logit += {"inbound": 0.3, "outbound": -0.4, "referral": 0.5, "event": 0.0}[source]
    logit += {"na": 0.1, "emea": 0.0, "apac": -0.1}[lead["region"]]
    logit += {"email": 0.0, "call": 0.1, "linkedin": -0.1}[channel]
    logit += {"same_day": 0.1, "next_day": 0.1, "next_week": -0.2}[timing]
    # each size answers to its own channel
    logit += {("large", "call"): 0.8, ("small", "email"): 0.6, ("mid", "linkedin"): 0.6}.get(
        (size, channel), 0.0
    )
    # each industry to its own offer
    logit += {
        ("saas", "trial"): 0.8,
        ("retail", "discount"): 0.8,
        ("manufacturing", "demo"): 0.8,
        ("finance", "demo"): 0.5,
    }.get((industry, offer), 0.0)
    # inbound leads want an answer now; cold outbound ones some room
    logit += {("inbound", "same_day"): 0.6, ("outbound", "next_week"): 0.6}.get(
        (source, timing), 0.0
    )
    return logit


def close_probability(lead: Mapping[str, Any], followup: Mapping[str, Any]) -> float:
    return 1.0 / (1.0 + math.exp(-close_logit(lead, followup)))


def expected_value(lead: Mapping[str, Any], followup: Mapping[str, Any]) -> float:
    """The reward the spec defines, in expectation: won × (1 + amount / 100,000)."""
    amount = DEAL[lead["size"]] * OFFER_VALUE[followup["offer"]] * math.exp(0.5**2 / 2)
    return close_probability(lead, followup) * (1.0 + amount / 100_000)


def allowed(lead: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every follow-up the skeleton allows for this lead (no discount for large accounts)."""
    out = []
    for values in product(*KNOBS.values()):
        followup = dict(zip(KNOBS, values, strict=True))
        if not (followup["offer"] == "discount" and lead["size"] == "large"):
            out.append(followup)
    return out


def best_followup(lead: Mapping[str, Any]) -> dict[str, Any]:
    """The hidden best follow-up for a lead: the highest expected reward."""
    return max(allowed(lead), key=lambda f: expected_value(lead, f))


def segments() -> Iterator[dict[str, str]]:
    for industry, size, region, source in product(INDUSTRIES, SIZES, REGIONS, SOURCES):
        yield {"industry": industry, "size": size, "region": region, "source": source}


@dataclass
class Outcome:
    """What the CRM reports when a lead closes (or nothing, when it goes silent)."""

    day: float
    signals: dict[str, Any]
    dirt: str | None = None


@dataclass
class CRM:
    """Leads and their outcomes, seeded: the same seed, the same leads and outcomes."""

    seed: int = 11
    rng: random.Random = field(init=False)
    issued: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def lead(self) -> tuple[str, dict[str, Any], bool]:
        """A new lead: its id, its context as the CRM writes it, and whether the id is a
        duplicate of an earlier lead's (the same lead created twice)."""
        rng = self.rng
        context = {
            feature: rng.choices(list(shares), list(shares.values()))[0]
            for feature, shares in MIX.items()
        }
        duplicate = self.issued > 0 and rng.random() < DIRT["duplicate lead id"]
        if not duplicate:
            self.issued += 1
        number = rng.randrange(self.issued) if duplicate else self.issued
        return f"L-{number:06d}", context, duplicate

    def capitalised(self) -> bool:
        return self.rng.random() < DIRT["source in capitals"]

    def outcome(self, day: float, lead: Mapping[str, Any], followup: Mapping[str, Any]) -> Outcome:
        """The close, 20 to 90 days after the follow-up (8% of leads go silent: no outcome),
        with the CRM's dirt mixed in."""
        rng = self.rng
        won = rng.random() < close_probability(lead, followup)
        amount = DEAL[lead["size"]] * OFFER_VALUE[followup["offer"]] * rng.lognormvariate(0, 0.5)
        closed = day + rng.uniform(20, 90)
        signals: dict[str, Any] = {
            "won": int(won),
            "amount": round(amount if won else 0.0, 2),
            "stage": "won" if won else "lost",
            "probability": round(rng.uniform(60, 100) if won else rng.uniform(0, 40)),
            "created": math.floor(day),
            "closed": math.floor(closed),
        }
        if rng.random() < 0.08:
            return Outcome(closed, {})  # never closed in the CRM: the window decides
        dirt = self._dirt()
        if dirt == "negative amount":
            signals["amount"] = -round(DEAL[lead["size"]] * rng.uniform(0.1, 1.0), 2)
        elif dirt == "closed before created":
            signals["created"], signals["closed"] = signals["closed"], signals["created"]
        elif dirt == "unknown stage":
            signals["stage"] = rng.choice(("on hold", "Closed?", "unknown"))
        elif dirt == "probability above 100":
            signals["probability"] = rng.choice((110, 150, 1000))
        return Outcome(closed, signals, dirt)

    def _dirt(self) -> str | None:
        draw = self.rng.random()
        for name in ("negative amount", "closed before created", "unknown stage"):
            if draw < DIRT[name]:
                return name
            draw -= DIRT[name]
        return "probability above 100" if draw < DIRT["probability above 100"] else None
