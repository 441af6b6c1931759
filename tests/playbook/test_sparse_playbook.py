"""A playbook with a sparse posterior (a big design) learns, stores, loads, serves, updates
online and is analysed like a dense one, on DuckDB and PostgreSQL."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import flywheel
from flywheel.learn import model
from flywheel.playbook.book import Playbook
from tests.conftest import T0, Clock
from tests.playbook.test_learn import play, spec, truth


def logged(wheel: flywheel.Wheel, clock: Clock, n: int, rng: random.Random) -> None:
    """``n`` rows served uniformly over the allowed combinations (the same data every run,
    whatever decide's own random draws)."""
    allowed = [
        {"opening": o, "twists": t}
        for o in ("question", "suspense", "dialogue")
        for t in range(4)
        if not (o == "question" and t == 3)
    ]
    rows = []
    for _ in range(n):
        clock.now += 60
        context, params = {"genre": rng.choice(["thriller", "romance"])}, rng.choice(allowed)
        converted = rng.random() < truth(context, params)
        rows.append({"context": context, "params": params, "results": {"converted": converted}})
    wheel.log_many(rows)


@pytest.fixture
def sparse_wheel(
    each_store: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[flywheel.Wheel, Clock]]:
    monkeypatch.setattr(model, "SPARSE_ABOVE", 5)  # the small test design counts as big
    clock = Clock(T0)
    wheel = flywheel.open(spec(), store=each_store, clock=clock, background=False)
    yield wheel, clock
    wheel.close()


def test_a_wheel_that_serves_draws_a_big_playbook_as_it_opens(
    each_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The draws a big playbook stores as their seed are drawn on a thread of their own as
    a serving wheel opens (its first decide for an untabulated segment seldom waits), and
    never by a command that only reads."""
    monkeypatch.setattr(model, "SPARSE_ABOVE", 5)
    clock = Clock(T0)
    with flywheel.open(spec(), store=each_store, clock=clock, background=False) as wheel:
        logged(wheel, clock, 600, random.Random(2))
        assert wheel.learn(as_of=clock.now, seed=1).published
    with flywheel.open(spec(), store=each_store, clock=clock) as serving:
        assert serving._drawing is not None
    served = serving.playbook
    assert served is not None and served._scoring is not None  # drawn by the time it closed
    with flywheel.open(spec(), store=each_store, clock=clock, background=False) as reading:
        assert reading._drawing is None and reading.playbook is not None
        assert reading.playbook._scoring is None


def test_a_sparse_playbook_serves_the_same_after_a_reload(
    sparse_wheel: tuple[flywheel.Wheel, Clock],
) -> None:
    wheel, clock = sparse_wheel
    logged(wheel, clock, 2000, random.Random(1))
    result = wheel.learn(as_of=clock.now, seed=3)
    assert result.published
    served = wheel.playbook
    assert served is not None and served.posterior.sparse and served.posterior.cov is None
    found = wheel.store.playbook(result.version)
    assert found is not None
    loaded = Playbook.load(wheel.spec, *found)
    assert loaded.posterior.sparse and loaded.posterior.precision is not None
    assert loaded.draws.dtype == np.float32 and served.draws.dtype == np.float32
    np.testing.assert_array_equal(loaded.scoring, served.scoring)
    for key, table in served.segments.items():
        stored = loaded.segments[key]
        np.testing.assert_array_equal(stored.probs, table.probs)
        # computed again from the stored draws: the same table, to the last bit
        again = loaded._compute(key, {"genre": ["thriller", "romance"][key[0]]})
        np.testing.assert_array_equal(again.probs, table.probs)
        np.testing.assert_allclose(again.low, table.low)
    # it learned: the best combination for thrillers is suspense with two twists
    best = {b["context"]["genre"]: b["params"] for b in loaded.best()}
    assert (best["thriller"]["opening"], best["thriller"]["twists"]) == ("suspense", 2)


def test_a_sparse_playbook_stores_the_seed_of_its_draws_and_draws_them_again(
    sparse_wheel: tuple[flywheel.Wheel, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    wheel, clock = sparse_wheel
    logged(wheel, clock, 600, random.Random(4))
    result = wheel.learn(as_of=clock.now)  # no seed given: fresh entropy, recorded
    served = wheel.playbook
    found = wheel.store.playbook(result.version)
    assert served is not None and served.redraw is not None and found is not None
    with np.load(io.BytesIO(found[2])) as archive:
        arrays = {name: archive[name] for name in archive.files}
    assert "draws" not in arrays and int(str(arrays["draw_seed"])) == served.redraw.entropy
    assert float(arrays["draw_tails"]) == served.redraw.tails == wheel.spec.learn.explore_tails
    loaded = Playbook.load(wheel.spec, *found)
    np.testing.assert_array_equal(loaded.scoring, served.scoring)
    assert not caplog.records  # drawn again, they are the publisher's to the last bit
    # drawn otherwise than where it was published (other NumPy or QDLDL builds): said
    arrays["draw_digest"] = np.array("0" * 32)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    elsewhere = Playbook.load(wheel.spec, found[0], found[1], buffer.getvalue())
    np.testing.assert_array_equal(elsewhere.scoring, served.scoring)
    assert "came out different" in caplog.text

    def drawn_again(arrays: dict[str, np.ndarray]) -> Playbook:
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        return Playbook.load(wheel.spec, found[0], found[1], buffer.getvalue())

    # the recipe's full-width share is read back and drawn with
    tailed = drawn_again({**arrays, "draw_tails": np.array(0.25)})
    assert tailed.redraw is not None and tailed.redraw.tails == 0.25
    assert not np.array_equal(tailed.scoring, served.scoring)
    # stored before draws had tails: its recipe has none
    untailed = drawn_again({k: v for k, v in arrays.items() if k != "draw_tails"})
    assert untailed.redraw is not None and untailed.redraw.tails == 0.0
    np.testing.assert_array_equal(untailed.scoring, served.scoring)
    # a payload that holds the draws themselves (as stored before) serves them as they are
    del arrays["draw_seed"], arrays["draw_count"], arrays["draw_spread"], arrays["draw_digest"]
    arrays["draws"] = served.draws
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    older = Playbook.load(wheel.spec, found[0], found[1], buffer.getvalue())
    assert older.redraw is None
    np.testing.assert_array_equal(older.scoring, served.scoring)


def test_a_sparse_playbook_updates_online_and_is_analysed(
    sparse_wheel: tuple[flywheel.Wheel, Clock],
) -> None:
    wheel, clock = sparse_wheel
    play(wheel, clock, 600, random.Random(2))
    assert wheel.learn(as_of=clock.now, seed=1).published
    before = wheel.playbook
    assert before is not None
    play(wheel, clock, 300, random.Random(3))
    assert wheel.update()
    after = wheel._decider.playbook  # what decide serves now
    assert after is not None and after.online and after.posterior.sparse
    assert after.posterior.weight > before.posterior.weight
    analysis = wheel.analyze()
    assert analysis.findings.single  # estimates with intervals, from the sparse posterior
    for s in analysis.findings.single:
        assert s.low <= s.estimate <= s.high
