"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright),
against ``flywheel serve`` processes: every page loads without a console error and draws its
charts with data, the actions work with an admin key and are refused with lesser ones, the
page follows new signals without a reload, and two servers on one PostgreSQL store show one
wheel. Screenshots of each page are saved in ``build/screenshots/``.

``make test`` installs Chromium; elsewhere these tests skip when it is missing, except under
``CI=true``, where they must run."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flywheel
from flywheel import demo
from flywheel.demo import example_spec
from flywheel.seatbelt import breaker
from flywheel.server import keys as api_keys
from tests.conftest import WAIT, Clock
from tests.server.dashboard.conftest import turn
from tests.server.test_app import Client
from tests.server.test_keys import _serve, _spec

PAGES = ("overview", "playbook", "findings", "seatbelt", "health", "data")
CHARTS = {"overview": 2, "findings": 1, "health": 2}  # charts each page draws
SHOTS = Path(__file__).parents[3] / "build" / "screenshots"
ARGS = [  # headless on a machine with no network: nothing started that would look for one
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    found = os.environ.get("FLYWHEEL_CHROMIUM") or shutil.which("chromium")
    if found is None:
        reason = "Chromium is not installed (Debian's chromium package; make test installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}: CI must run the browser tests")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """One browser for this module, stopped at its end: while Playwright's sync API runs, this
    thread holds an event loop, and another module's ``asyncio.run`` would find it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=ARGS)
        yield launched
        launched.close()


class Tab:
    """One browser tab on one server, with the console errors it logged."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1200, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT * 1000)
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else 0)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, page: str = "overview", key: str | None = None) -> None:
        self.page.goto(f"{self.base}/#{page}")
        if key is not None:
            self.use_key(key)
        self.shown(page)

    def use_key(self, key: str) -> None:
        self.page.fill("#key-input", key)
        self.page.press("#key-input", "Enter")

    def act(self, action: str, outcome: str, reason: str = "", version: str = "") -> None:
        """Fill an action's form (a resume's reason, a rollback's version), send it, and wait
        for its outcome (``done``, or ``refused:has-text('403')``)."""
        if reason:
            self.page.fill(f"#f-{action}-reason", reason)
        if version:
            self.page.select_option(f"#f-{action}-version", version)
        self.page.click(f"form[data-action={action}] button")
        self.page.wait_for_selector(f"#outcome-{action}.{outcome}")

    def go(self, page: str) -> None:
        """Follow the page's link by keyboard, as a person without a mouse would."""
        self.page.focus(f'nav a[href="#{page}"]')
        self.page.keyboard.press("Enter")
        self.shown(page)

    def shown(self, page: str) -> None:
        self.page.wait_for_selector(f'#page[data-page="{page}"][data-ready="true"]')

    def section(self, title: str) -> Any:
        return self.page.locator("section", has=self.page.locator("h3", has_text=title))

    def figure(self, label: str) -> str:
        item = self.page.locator(".stats div", has=self.page.locator("dt", has_text=label))
        return str(item.locator("dd").first.inner_text()).split("\n")[0]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab_on(browser: Any) -> Iterator[Callable[[Client], Tab]]:
    """A new tab (a context of its own: its own session storage) on a server."""
    opened: list[Tab] = []

    def make(client: Client) -> Tab:
        tab = Tab(browser, client.base)
        opened.append(tab)
        return tab

    yield make
    for tab in opened:
        tab.close()


def _store(url: str) -> dict[str, str]:
    """A wheel turned for six days up to now, halted, with a key of each scope."""
    clock = Clock(time.time())
    wheel = flywheel.open(example_spec(), store=url, clock=clock, background=False, seed=3)
    try:
        turn(wheel, clock)
        keys: dict[str, str] = {s: api_keys.create(wheel.store, s)[1] for s in api_keys.SCOPES}
        breaker.halt(wheel.store, wheel.now(), "test", "halted for the dashboard test")
    finally:
        wheel.close()
    return keys


@pytest.fixture
def duckdb_server(tmp_path: Path) -> Iterator[tuple[Client, dict[str, str]]]:
    keys = _store(f"duckdb:///{tmp_path / 'dash.duckdb'}")
    with _serve(_spec(tmp_path, "duckdb:///dash.duckdb")) as client:
        yield client, keys


def test_every_page_loads_and_draws_its_charts(
    duckdb_server: tuple[Client, dict[str, str]], tab_on: Callable[[Client], Tab]
) -> None:
    client, keys = duckdb_server
    tab = tab_on(client)
    tab.open("overview", keys["admin"])
    SHOTS.mkdir(parents=True, exist_ok=True)
    for page in PAGES:
        if page != "overview":
            tab.go(page)
        charts = tab.page.locator("figure svg[role='img']")
        assert charts.count() == CHARTS.get(page, 0), page
        for i in range(charts.count()):
            svg = charts.nth(i)
            assert svg.get_attribute("aria-label"), page  # the chart in words
            assert svg.locator("circle, polyline, rect").count() > 0, page  # drawn, with data
        tab.page.screenshot(path=str(SHOTS / f"{page}.png"), full_page=True)
    assert tab.errors == []
    tab.go("overview")
    assert "halted for the dashboard test" in tab.section("Alerts").inner_text()
    # the first Tab from the top reaches the skip link: the page is usable by keyboard
    tab.page.reload()
    tab.shown("overview")
    tab.page.keyboard.press("Tab")
    assert tab.page.evaluate("document.activeElement.className") == "skip"
    assert tab.errors == []


def test_the_demos_store_needs_no_key_on_loopback(
    tmp_path: Path, tab_on: Callable[[Client], Tab]
) -> None:
    spec = tmp_path / "demo" / "flywheel.toml"
    demo.run(spec, decisions=2000, seed=7)  # the story product, as `make demo` runs it
    with _serve(spec) as client:
        tab = tab_on(client)
        tab.open("overview")  # no key asked for: a store without keys, served on loopback
        assert tab.page.locator("#key-form").is_hidden()
        for page in PAGES:
            if page != "overview":
                tab.go(page)
            charts = tab.page.locator("figure svg[role='img']")
            assert charts.count() == CHARTS.get(page, 0), page
        assert tab.page.locator("#forget-key").is_hidden()
        assert tab.errors == []


def test_resume_and_rollback_work_with_an_admin_key(
    duckdb_server: tuple[Client, dict[str, str]], tab_on: Callable[[Client], Tab]
) -> None:
    client, keys = duckdb_server
    tab = tab_on(client)
    tab.open("seatbelt", keys["admin"])
    assert tab.section("Halted").count() == 1
    tab.act("resume", "done", reason="checked the data: a real change")
    assert "No active alerts" in tab.section("Alerts").inner_text()
    first = tab.section("Events").locator("tbody tr").first.inner_text()
    admin = keys["admin"].split("_")[1]
    assert "resume" in first and "checked the data" in first and f"key {admin}" in first
    assert keys["admin"] not in tab.page.content()  # the key itself is never shown

    tab.go("playbook")
    assert tab.section("Playbook v2").count() == 1
    tab.act("rollback", "done", version="1")
    assert tab.section("Playbook v3").count() == 1
    assert "restored version 1 as version 3" in tab.section("Rollbacks").inner_text()
    assert tab.errors == []
    status = client.call("GET", "/v1/status", key=keys["decide"])[1]
    assert status["playbook"] == 3 and status["halted"] is False


def test_the_actions_are_refused_with_an_ingest_or_a_decide_key(
    duckdb_server: tuple[Client, dict[str, str]], tab_on: Callable[[Client], Tab]
) -> None:
    client, keys = duckdb_server
    tab = tab_on(client)
    tab.page.goto(f"{client.base}/#seatbelt")
    tab.use_key(keys["ingest"])
    tab.page.wait_for_selector("#key-error:has-text('may not read')")
    assert tab.page.locator("#page section").count() == 0  # nothing of the wheel shown

    tab.use_key(keys["decide"])
    tab.shown("seatbelt")
    tab.act("resume", "refused:has-text('403')", reason="not mine to lift")
    tab.go("playbook")
    tab.act("rollback", "refused:has-text('403')")
    status = client.call("GET", "/v1/status", key=keys["decide"])[1]
    assert status["playbook"] == 2 and status["halted"] is True


def test_the_page_follows_new_signals_without_a_reload(
    duckdb_server: tuple[Client, dict[str, str]], tab_on: Callable[[Client], Tab]
) -> None:
    client, keys = duckdb_server
    tab = tab_on(client)
    tab.open("overview", keys["decide"])
    before = tab.figure("signals")
    tab.page.evaluate("window.stillThere = true")
    data = client.call("GET", "/v1/dashboard/data", key=keys["admin"])[1]
    table = next(b for b in data["blocks"] if b["title"].startswith("Decisions"))
    ids = [row[table["columns"].index("id")] for row in table["rows"][:20]]
    batch = {"signals": [{"decision": i, "name": "rating", "value": 5} for i in ids]}
    assert client.call("POST", "/v1/signals", batch, key=keys["ingest"])[0] == 200
    wanted = f"{int(before.replace(',', '')) + len(ids):,}"
    tab.page.wait_for_function(
        "wanted => [...document.querySelectorAll('.stats div')].some("
        "d => d.querySelector('dt').textContent === 'signals'"
        " && d.querySelector('dd').firstChild.textContent === wanted)",
        arg=wanted,
    )
    assert tab.page.evaluate("window.stillThere") is True
    assert tab.errors == []


def test_two_servers_on_postgresql_show_one_wheel(
    tmp_path: Path, pg_url: str, tab_on: Callable[[Client], Tab]
) -> None:
    keys = _store(pg_url)
    spec = _spec(tmp_path, pg_url)
    with _serve(spec) as one, _serve(spec) as two:
        first, second = tab_on(one), tab_on(two)
        first.open("overview", keys["admin"])
        assert first.page.locator("figure svg[role='img']").count() == CHARTS["overview"]
        second.open("seatbelt", keys["admin"])
        assert second.section("Halted").count() == 1

        first.go("seatbelt")
        first.act("resume", "done", reason="resumed on the first server")
        # the second server's page follows by itself
        second.page.wait_for_selector("section.block-alerts:has-text('No active alerts')")

        second.go("playbook")
        second.act("rollback", "done", version="1")
        first.go("playbook")
        first.page.wait_for_selector("section:has(h3:has-text('Playbook v3'))")
        assert first.errors == [] and second.errors == []
