"""A wheel that has turned: six days of story decisions ending at the test's clock, with their
completions and some ratings, learned on day 2 and day 4 (two playbook versions)."""

from __future__ import annotations

import random

import flywheel
from tests.conftest import DAY, Clock

GENRES = ("thriller", "romance", "scifi", "drama")


def turn(wheel: flywheel.Wheel, clock: Clock, *, days: int = 6, per_day: int = 150) -> None:
    """Decide ``per_day`` times a day for ``days`` days up to the clock's time, reporting each
    result at once; learn at the start of day 2 and day 4."""
    rng = random.Random(5)
    end = clock.now
    start = end - days * DAY
    for day in range(days):
        if day in (2, 4):
            clock.now = start + day * DAY
            assert wheel.learn().published
        for i in range(per_day):
            clock.now = start + day * DAY + (i + 1) * DAY / per_day
            d = wheel.decide({"genre": rng.choice(GENRES)}, unit=f"reader-{rng.randrange(300)}")
            good = d.params["opening_type"] == "suspense"
            wheel.signal(d.id, "completed", rng.random() < (0.7 if good else 0.3))
            if rng.random() < 0.2:
                wheel.signal(d.id, "rating", rng.randint(1, 5))
    clock.now = end
    wheel.flush()
