"""The dashboard's pages as built from a real wheel, the charts they draw, and how pages are
kept and refreshed (no browser here: tests/server/dashboard/test_browser.py drives one)."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest

import flywheel
from flywheel.errors import InvalidInputError
from flywheel.seatbelt import breaker
from flywheel.server.dashboard import Views, charts, pages
from tests.conftest import Clock, wait_for
from tests.server.dashboard.conftest import turn

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def turned(make_wheel: Callable[..., flywheel.Wheel], clock: Clock) -> flywheel.Wheel:
    wheel = make_wheel(seed=3)
    turn(wheel, clock)
    return wheel


def _block(blocks: list[dict[str, Any]], title: str) -> dict[str, Any]:
    found = [b for b in blocks if b["title"].startswith(title)]
    assert len(found) == 1, [b["title"] for b in blocks]
    return found[0]


def _svg(text: str) -> ET.Element:
    root = ET.fromstring(text)  # well-formed, or this raises
    assert root.tag == SVG + "svg" and root.get("role") == "img" and root.get("aria-label")
    assert root.find(SVG + "title") is not None and root.find(SVG + "desc") is not None
    return root


def test_the_overview_counts_what_the_store_holds(turned: flywheel.Wheel) -> None:
    blocks = pages.overview(turned)
    figures = {i["label"]: i for i in _block(blocks, "The turn")["items"]}
    status = turned.status()
    assert figures["decisions"]["value"] == f"{status.counts.decisions:,}" == "900"
    assert figures["signals"]["value"] == f"{status.counts.signals:,}"
    assert figures["playbook"]["value"] == "v2"
    force = turned.health().force
    assert figures["force"]["value"] == f"{force.value:.0%}"
    hourly = _block(blocks, "Decisions and signals per hour")
    # the last 48 hours hold days 4 and 5: 300 decisions, each with its completion
    assert sum(row[1] for row in hourly["table"]["rows"]) == 300
    assert sum(row[2] for row in hourly["table"]["rows"]) >= 300
    _svg(hourly["svg"])
    versions = _block(blocks, "Result per playbook version")
    assert [row[0].split()[0] for row in versions["table"]["rows"]] == ["cold", "v1", "v2"]
    assert len(_svg(versions["svg"]).findall(SVG + "circle")) == 3
    assert _block(blocks, "Alerts")["items"] == []


def test_the_playbook_page_shows_each_segment_and_the_history(turned: flywheel.Wheel) -> None:
    blocks = pages.playbook(turned)
    table = _block(blocks, "Playbook v2")
    assert len(table["rows"]) == 4  # one per genre
    for column in ("genre", "opening_type", "expected", "low", "high", "served_share"):
        assert column in table["columns"]
    history = _block(blocks, "History")["rows"]
    assert [r[2].split()[0] for r in history if r[1] == "publish"] == ["v2", "v1"]
    rollback = _block(blocks, "Roll back")
    assert rollback["fields"][0]["options"] == ["1"] and rollback["disabled"] is None
    turned.rollback(1)
    history = _block(pages.playbook(turned), "History")["rows"]
    assert history[0][1] in {"publish", "rollback"}
    assert any(r[1] == "rollback" and "restored version 1" in r[2] for r in history)


def test_the_findings_page_charts_the_strongest_interactions(turned: flywheel.Wheel) -> None:
    blocks = pages.findings(turned)
    chart = _block(blocks, "Strongest interactions")
    root = _svg(chart["svg"])
    assert len(root.findall(SVG + "circle")) == len(chart["table"]["rows"]) > 0
    pairs = _block(blocks, "In combination")["rows"]
    assert {r[1] for r in pairs} <= {"yes", "no"} and pairs
    alone = _block(blocks, "Alone")["rows"]
    assert any(r[0] == "opening_type" and r[1] == "suspense" for r in alone)


def test_the_seatbelt_page_shows_a_halt_and_offers_resume(turned: flywheel.Wheel) -> None:
    resume = _block(pages.seatbelt(turned), "Resume")
    assert resume["disabled"] == "the wheel is not halted"
    breaker.halt(turned.store, turned.now(), "test", "a halt <b>for</b> the test", {"z": 48.8})
    blocks = pages.seatbelt(turned)
    assert _block(blocks, "Alerts")["items"][0]["level"] == "halt"
    halted = _block(blocks, "Halted")
    assert "a halt <b>for</b> the test" in halted["lines"] and "48.8" in halted["lines"][2]
    assert _block(blocks, "Resume")["disabled"] is None
    assert _block(blocks, "Events")["rows"][0][1] == "halt"
    assert _block(blocks, "Quarantine")["rows"] == []


def test_the_health_page_times_each_transition(turned: flywheel.Wheel) -> None:
    blocks = pages.health(turned)
    timing = _block(blocks, "Median time")
    names = [r[0].split()[0] for r in timing["table"]["rows"]]
    assert names == ["signal", "complete", "learned", "served", "cycle"]
    _svg(timing["svg"])
    _svg(_block(blocks, "Weekly result")["svg"])


def test_the_data_page_finds_a_decision_or_a_unit(turned: flywheel.Wheel) -> None:
    latest = pages.data(turned)
    decisions = _block(latest, "Decisions")
    assert len(decisions["rows"]) == pages.LATEST
    ident = decisions["rows"][0][decisions["columns"].index("id")]
    unit = decisions["rows"][0][decisions["columns"].index("unit")]
    assert not unit.startswith("reader-")  # pseudonymised as stored
    one = pages.data(turned, ident)
    assert [r[0] for r in _block(one, "Decisions")["rows"]] == [ident]
    assert {r[0] for r in _block(one, "Signals")["rows"]} == {ident}
    theirs = _block(pages.data(turned, unit), "Decisions")
    assert theirs["rows"] and all(
        r[decisions["columns"].index("unit")] == unit for r in theirs["rows"]
    )
    assert _block(pages.data(turned, "no such unit"), "Decisions")["rows"] == []
    with pytest.raises(InvalidInputError, match="q"):
        pages.data(turned, "x" * 201)


def test_a_chart_escapes_its_text_and_says_what_it_shows() -> None:
    svg = charts.lines("<script>", ["a&b", "c"], {"x<y": [1.0, None], "z": [None, None]})
    root = _svg(svg)
    assert "<script>" not in svg and root.find(SVG + "title").text == "<script>"  # type: ignore[union-attr]
    assert "x<y: from 1 to 1" in (root.get("aria-label") or "")
    assert "z: no data" in (root.get("aria-label") or "")
    empty = _svg(charts.intervals("nothing", []))
    assert "no data yet" in (empty.get("aria-label") or "")
    forest = _svg(charts.forest("effects", [("a × b: " + "x" * 60, 0.1, -0.05, 0.25)]))
    assert forest.findall(f".//{SVG}text/{SVG}title")[0].text == "a × b: " + "x" * 60
    bars = _svg(charts.bars("counts", [("a", 3.0), ("b", 0.0)], unit="rows"))
    assert len(bars.findall(SVG + "rect")) == 2 and "a: 3 rows" in (bars.get("aria-label") or "")


def test_pages_are_kept_and_recomputed_in_the_background(wheel: flywheel.Wheel) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def slow(_wheel: flywheel.Wheel) -> list[dict[str, Any]]:
        gate.wait(60)
        calls.append(len(calls))
        return [{"kind": "text", "title": f"call {len(calls)}", "lines": []}]

    def broken(_wheel: flywheel.Wheel) -> list[dict[str, Any]]:
        raise ValueError("no good")

    views = Views(wheel, fresh_for=3600.0, pages={"slow": slow, "broken": broken})
    try:
        assert views.page("slow") == {"ready": False, "page": "slow"}  # computing meanwhile
        gate.set()
        assert wait_for(lambda: views.page("slow")["ready"])
        first = views.page("slow")
        assert first["blocks"][0]["title"] == "call 1" and first["error"] is None
        assert views.page("slow")["blocks"] == first["blocks"] and calls == [0]  # kept
        assert views.page("slow", fresh=True)["blocks"][0]["title"] == "call 2"
        views.forget()  # stale now: answered from what was kept, recomputed behind
        assert views.page("slow")["blocks"][0]["title"] == "call 2"
        assert wait_for(lambda: views.page("slow")["blocks"][0]["title"] == "call 3")
        assert wait_for(lambda: views.page("broken")["ready"])
        assert views.page("broken")["error"] == "ValueError: no good"
    finally:
        gate.set()
        views.close()
