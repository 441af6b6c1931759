"""The dashboard's pages as built from a real wheel, the charts they draw, and how pages are
kept and refreshed (no browser here: tests/server/dashboard/test_browser.py drives one)."""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flywheel
from flywheel.demo import example_text
from flywheel.errors import InvalidInputError
from flywheel.seatbelt import breaker
from flywheel.server.dashboard import Views, charts, pages
from flywheel.spec import Spec
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
    versions = _block(blocks, "Versions")["rows"]
    assert [r[0] for r in versions] == ["v2", "v1"] and {r[4] for r in versions} == {"learned"}
    assert _block(blocks, "Rollbacks")["rows"] == []
    rollback = _block(blocks, "Roll back")
    assert rollback["fields"][0]["options"] == ["1"] and rollback["disabled"] is None
    turned.rollback(1, actor="ops")
    blocks = pages.playbook(turned)
    assert _block(blocks, "Versions")["rows"][0][::4] == ["v3", "a copy of v1 (rolled back)"]
    events = _block(blocks, "Rollbacks")["rows"]
    assert [e[1:] for e in events] == [["rollback", "restored version 1 as version 3", "ops"]]
    assert _block(blocks, "Roll back")["fields"][0]["options"] == ["2", "1"]


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
    written_otherwise = pages.data(turned, ident.upper().replace("-", ""))
    assert [r[0] for r in _block(written_otherwise, "Decisions")["rows"]] == [ident]
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
        views.forget()  # after an action: fresh waits for a computation that saw it
        assert views.page("slow", fresh=True)["blocks"][0]["title"] == "call 2"
        gate.clear()
        views.forget()  # stale now: answered from what was kept, recomputed behind
        assert views.page("slow")["blocks"][0]["title"] == "call 2"
        gate.set()
        assert wait_for(lambda: views.page("slow")["blocks"][0]["title"] == "call 3")
        assert views.page("slow")["computations"] == 3
        assert wait_for(lambda: views.page("broken")["ready"])
        assert views.page("broken")["error"] == "ValueError: no good"
    finally:
        gate.set()
        views.close()


def _luminance(colour: str) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_every_text_colour_is_readable_on_every_background() -> None:
    """WCAG AA: a contrast of 4.5:1 for text, on white and on the tinted panels."""
    css = (Path(pages.__file__).parent / "static" / "style.css").read_text()
    texts = set(re.findall(r"(?<![-\w])color: (#[0-9a-f]{6})", css))
    backgrounds = set(re.findall(r"background: (#[0-9a-f]{6})", css))
    assert len(texts) >= 5 and len(backgrounds) >= 4
    for text in (texts - {"#ffffff"}) | {charts.INK, *charts.COLOURS}:  # white: on buttons
        for background in backgrounds - {"#1f5fa8", "#767676"}:  # the buttons' own fills
            assert _contrast(text, background) >= 4.5, (text, background)
    assert _contrast("#ffffff", "#1f5fa8") >= 4.5 and _contrast("#ffffff", "#767676") >= 4.5


def test_the_seatbelt_page_shows_the_quarantine_and_its_rules(
    make_wheel: Callable[..., flywheel.Wheel], clock: Clock
) -> None:
    extra = "\n[quality]\nranges = { rating = [2, 5] }\n[seatbelt]\nmax_quarantined = 0.5\n"
    checked = Spec.from_toml(example_text() + extra)
    wheel = make_wheel(checked, seed=3)
    turn(wheel, clock, days=3, per_day=100)
    held = _block(pages.seatbelt(wheel), "Quarantine")["rows"]
    assert held and all("rating in [2, 5]" in r[1] for r in held)
    quality = {i["label"]: i["value"] for i in _block(pages.seatbelt(wheel), "Quality")["items"]}
    assert int(quality["quarantined"]) == len(held)
    assert _block(pages.seatbelt(wheel), "Release")["disabled"] is None
    assert wheel.release(accept=True, actor="ops")[0] == len(held)
    blocks = pages.seatbelt(wheel)
    assert _block(blocks, "Quarantine")["rows"] == []
    assert _block(blocks, "Events")["rows"][0][1:] == [
        "override",
        f"accepted {len(held)} quarantined rows without a re-check",
        "ops",
    ]
