"""Privacy by default: pseudonymous units, redacted text, and forget that leaves no trace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flywheel
from flywheel.collect.units import CHECK_META_KEY, SALT_META_KEY
from flywheel.demo import example_spec
from flywheel.store import Store, open_store
from tests.conftest import THRILLER

SECRET_UNIT = "alice.unit.7f3e9c"
SECRET_TEXT = "ZEBRA-PASSPHRASE-QUOKKA"


def file_bytes(db: Path) -> bytes:
    data = db.read_bytes()
    wal = Path(f"{db}.wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


@pytest.mark.duckdb_file
def test_raw_unit_ids_never_reach_the_file(
    make_wheel: Callable[..., flywheel.Wheel], db: Path
) -> None:
    wheel = make_wheel()
    for _ in range(20):
        d = wheel.decide(THRILLER, unit=SECRET_UNIT)
        wheel.feedback(d, rating=3, unit=SECRET_UNIT)
    wheel.log(
        context=THRILLER, params=wheel.spec.default, results={"completed": 1}, unit=SECRET_UNIT
    )
    wheel.close()
    assert SECRET_UNIT.encode() not in file_bytes(db)


def test_units_hash_with_the_salt_from_the_environment(
    make_wheel: Callable[..., flywheel.Wheel], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYWHEEL_UNIT_SALT", "pepper")
    first = make_wheel()
    first.decide(THRILLER, unit="u")
    hashed = first.aligned().column("unit").to_pylist()[0]
    first.close()
    again = make_wheel()  # same salt: same hash, and forget finds the unit
    again.decide(THRILLER, unit="u")
    assert set(again.aligned().column("unit").to_pylist()) == {hashed}
    again.close()
    monkeypatch.setenv("FLYWHEEL_UNIT_SALT", "other")  # a changed salt would orphan every unit
    with pytest.raises(flywheel.StoreError, match=r"privacy\.unit_salt_env"):
        make_wheel()


def test_store_keeps_its_own_salt_when_none_is_configured(
    make_wheel: Callable[..., flywheel.Wheel], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLYWHEEL_UNIT_SALT", raising=False)
    first = make_wheel()
    first.decide(THRILLER, unit="u")
    first.close()
    second = make_wheel()
    second.decide(THRILLER, unit="u")
    assert len(set(second.aligned().column("unit").to_pylist())) == 1  # stable across runs


@pytest.mark.duckdb_file
def test_forget_removes_every_row_of_the_unit_from_the_file(
    make_wheel: Callable[..., flywheel.Wheel], db: Path
) -> None:
    wheel = make_wheel()
    keep = wheel.decide(THRILLER, unit="bob")
    wheel.feedback(keep, rating=5, comment="fine", unit="bob")
    for _ in range(3):
        d = wheel.decide(THRILLER, unit=SECRET_UNIT)
        wheel.feedback(d, rating=2, comment=f"my word is {SECRET_TEXT}")
        wheel.edit(d, draft="AI text", final=f"AI text {SECRET_TEXT}")
        wheel.signal(d, "completed", 1)
    wheel.log(
        context=THRILLER,
        params=wheel.spec.default,
        results={"comment": SECRET_TEXT},
        unit=SECRET_UNIT,
    )
    wheel.flush()
    assert SECRET_TEXT.encode() in file_bytes(db)  # the check below can fail

    deleted = wheel.forget(SECRET_UNIT)
    assert deleted == {"signals": 3 * 4 + 1, "edits": 3, "decisions": 4}
    rows = wheel.aligned().to_pylist()
    assert [r["decision_id"] for r in rows] == [keep.id]
    assert wheel.summary().signals == 2
    wheel.close()
    assert SECRET_TEXT.encode() not in file_bytes(db)


@pytest.mark.parametrize(
    ("pii", "token"),
    [
        ("jane.doe@example.com", "[email]"),
        ("+44 20 7946 0958", "[phone]"),
        ("4111 1111 1111 1111", "[card]"),
        ("192.168.10.24", "[ip]"),
    ],
)
def test_free_text_is_redacted_before_it_is_stored(
    wheel: flywheel.Wheel, pii: str, token: str
) -> None:
    d = wheel.decide(THRILLER)
    wheel.feedback(d, comment=f"reach me: {pii} thanks")
    wheel.edit(d, draft="draft", final=f"final {pii}")
    assert wheel.aligned().column("comment").to_pylist() == [f"reach me: {token} thanks"]
    edit = wheel.store.query("SELECT final, diff FROM edits").to_pylist()[0]
    assert edit["final"] == f"final {token}"
    assert token in edit["diff"] and pii not in edit["diff"]


def test_redaction_can_be_turned_off(make_wheel: Callable[..., flywheel.Wheel]) -> None:
    wheel = make_wheel(
        {
            "knobs": {"tone": ["a"]},
            "reward": {"formula": "accepted"},
            "privacy": {"redact_text": False},
        }
    )
    d = wheel.decide()
    wheel.feedback(d, comment="jane@example.com")
    assert wheel.aligned().column("comment").to_pylist() == ["jane@example.com"]


def _with_privacy(**privacy: object) -> dict[str, object]:
    return {"knobs": {"tone": ["a", "b"]}, "reward": {"formula": "accepted"}, "privacy": privacy}


def test_unit_ids_are_hashed_as_given_unless_normalised(
    make_wheel: Callable[..., flywheel.Wheel],
) -> None:
    wheel = make_wheel(_with_privacy())
    for unit in ("Alice@x.com", "alice@x.com"):
        wheel.signal(wheel.decide(unit=unit), "accepted", 1, unit=unit)
    assert len(set(wheel.aligned().column("unit").to_pylist())) == 2
    assert wheel.forget("alice@x.com") == {"signals": 1, "edits": 0, "decisions": 1}


def test_normalised_unit_ids_are_one_unit_everywhere_forget_included(
    make_wheel: Callable[..., flywheel.Wheel],
) -> None:
    wheel = make_wheel(_with_privacy(normalize_units=["trim", "lower"]))
    spellings = ("Alice@X.com", " alice@x.com\t", "ALICE@x.COM", "alice@x.com")
    for unit in spellings:
        d = wheel.decide(unit=unit)
        wheel.signal(d, "accepted", 1, unit=unit)
    wheel.log(context={}, params={"tone": "b"}, results={"accepted": 0}, unit="  ALICE@X.COM")
    kept = wheel.decide(unit="bob@x.com")
    assert len(set(wheel.aligned().column("unit").to_pylist())) == 2
    assert wheel.forget("Alice@x.com ") == {"signals": 5, "edits": 0, "decisions": 5}
    assert [r["decision_id"] for r in wheel.aligned().to_pylist()] == [kept.id]
    with pytest.raises(flywheel.InvalidInputError, match="unit: must not be empty"):
        wheel.decide(unit="   ")


def test_a_store_refuses_a_changed_unit_normalisation(
    make_wheel: Callable[..., flywheel.Wheel],
) -> None:
    make_wheel(_with_privacy()).close()  # hashed as given
    changed = r'privacy\.normalize_units: .*\[\], not \["trim"'
    with pytest.raises(flywheel.StoreError, match=changed):
        make_wheel(_with_privacy(normalize_units=["trim"]))
    with pytest.raises(flywheel.SpecError, match=r"privacy\.normalize_units"):
        make_wheel(_with_privacy(normalize_units=["upper"]))


class StaleReads:
    """A real store whose first reads of some settings come back empty, as for a process that
    read them just before another one, opening the same fresh store, wrote them."""

    def __init__(self, store: Store, stale: set[str]) -> None:
        self.store, self.stale = store, set(stale)

    def get_meta(self, key: str) -> str | None:
        if key in self.stale:
            self.stale.discard(key)
            return None
        return self.store.get_meta(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_processes_opening_a_fresh_store_at_once_share_one_unit_salt(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLYWHEEL_UNIT_SALT", raising=False)
    spec = example_spec()
    first = flywheel.open(spec, store=pg_url, refresh=0)
    late = StaleReads(open_store(spec, pg_url), {SALT_META_KEY, CHECK_META_KEY})
    second = flywheel.Wheel(spec, late, refresh=0)
    try:
        for wheel in (first, second):
            wheel.decide(THRILLER, unit="ada")
            wheel.flush()
        assert len(set(first.aligned().column("unit").to_pylist())) == 1
    finally:
        first.close()
        second.close()
    with flywheel.open(spec, store=pg_url, refresh=0) as again:  # the salt still checks
        assert again.forget("ada")["decisions"] == 2
