"""How much the rows before a change of the world still weigh: as much as the rows after it
say they still predict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from flywheel.learn.forget import MOST_STEPS, chained, forget_weight, weighed

ROWS = 4_500
CHANGE = 4_000  # where the change is looked at: found 500 rows (a cycle) after it began
CELLS = 12


def world(changed: bool, seed: int, numeric: bool) -> tuple[np.ndarray, ...]:
    """ROWS rows in CELLS cells; with ``changed`` every cell's rate is another cell's from
    CHANGE on (the best becomes the worst). The policy serves cell 0 most (as a learned one
    does), the others a little each. Returns each row's cell, its result and the expected
    result of the model learned before the change."""
    rng = np.random.default_rng(seed)
    cell = np.where(rng.random(ROWS) < 0.6, 0, rng.integers(1, CELLS, ROWS))
    rates = np.tile(np.linspace(0.1, 0.6, CELLS)[::-1], (ROWS, 1))
    if changed:
        rates[CHANGE:] = rates[0, ::-1]
    rate = rates[np.arange(ROWS), cell]
    if numeric:
        reward = rate * 10 + rng.normal(0, 2, ROWS)
    else:
        reward = (rng.random(ROWS) < rate).astype(float)
    return cell, reward, rates[0, cell] * (10 if numeric else 1)


@pytest.mark.parametrize("numeric", [False, True])
def test_a_change_the_rows_after_it_bear_out_is_forgotten(numeric: bool) -> None:
    for seed in range(5):
        cell, reward, expected = world(True, seed, numeric)
        weight, gains = forget_weight(cell, reward, expected, CHANGE, 0.01)
        assert weight <= 0.1, gains
        assert gains[weight] > 3
        assert forget_weight(cell, reward, expected, CHANGE, 0.01, margin=1e6)[0] == 1


@pytest.mark.parametrize("numeric", [False, True])
def test_a_change_found_by_chance_forgets_nothing(numeric: bool) -> None:
    for seed in range(5):
        cell, reward, expected = world(False, seed, numeric)
        weight, gains = forget_weight(cell, reward, expected, CHANGE, 0.03)
        assert weight == 1.0, gains


def test_the_least_weight_bounds_the_forgetting() -> None:
    cell, reward, expected = world(True, 0, False)
    weight, gains = forget_weight(cell, reward, expected, CHANGE, 0.2)
    assert weight >= 0.2 and min(gains) == 0.2
    assert forget_weight(cell, reward, expected, CHANGE, 1.0) == (1.0, {})
    few = slice(0, CHANGE + 2)
    assert forget_weight(cell[few], reward[few], expected[few], CHANGE, 0.1)[0] == 1


def test_a_later_change_never_gives_back_what_an_earlier_one_took() -> None:
    """Each change multiplies what the rows before it weigh: the rows before the first of
    three changes weigh the product of all three, however many came after."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    at = [start + timedelta(hours=h) for h in range(1, 4)]
    steps = chained(chained(chained((), at[0], 0.5), at[1], 0.25), at[2], 0.5)
    moments = np.array([(start + timedelta(minutes=m)).timestamp() for m in (30, 90, 150, 210)])
    assert weighed(moments, steps).tolist() == [0.0625, 0.125, 0.5, 1.0]
    # a change found between two earlier ones forgets the rows before it, and only those
    between = chained(steps, start + timedelta(minutes=100), 0.5)
    assert weighed(moments, between).tolist() == [0.03125, 0.0625, 0.5, 1.0]
    assert chained(steps, at[1], 1.0) == steps  # a change that forgot nothing
    many = steps
    for hour in range(4, 4 + MOST_STEPS):
        many = chained(many, start + timedelta(hours=hour), 0.9)
    assert len(many) == MOST_STEPS
    shares = [share for _, share in many]
    assert shares == sorted(shares)  # older rows never weigh more than newer ones
    later = np.array([(start + timedelta(hours=h, minutes=30)).timestamp() for h in range(12)])
    unmerged = np.prod([0.9] * MOST_STEPS)
    assert weighed(later, many)[0] == pytest.approx(0.0625 * unmerged)  # as if unmerged
    assert weighed(later, many)[1] <= 0.125 * unmerged  # merging forgets more, never less
