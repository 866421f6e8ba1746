from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from .harness import Bank, Bridge, Partner, ServerThread, start_bridge

CHROMIUM = "/usr/bin/chromium"
# As root, without a sandbox, and never reaching out to the network this machine does not have.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# The servers, bridges and pages serve this folder's tests, and stop when they are done: a
# bridge left serving would go on writing to its store (its sweeper, its housekeeping) while
# the other tests run.
@pytest.fixture(scope="package")
def servers() -> Iterator[ServerThread]:
    thread = ServerThread()
    yield thread
    thread.stop()


@pytest.fixture(scope="package")
def bank_server(servers: ServerThread) -> Bank:
    bank = Bank()
    bank.url = servers.serve(bank.app())
    return bank


@pytest.fixture
def bank(bank_server: Bank) -> Bank:
    bank_server.arrivals.clear()
    return bank_server


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> str:
    """Every browser test runs against a bridge on each storage engine."""
    return request.param


@pytest.fixture(scope="package")
def bridge_factory(
    servers: ServerThread,
    provider_key: rsa.RSAPrivateKey,
    tmp_path_factory: pytest.TempPathFactory,
    engine: str,
    request: pytest.FixtureRequest,
) -> Callable[..., Bridge]:
    """Bridges by settings, started once each for this folder's tests."""
    started: dict[tuple[tuple[str, str], ...], Bridge] = {}

    def bridge(**settings: Any) -> Bridge:
        key = tuple(sorted((name, str(value)) for name, value in settings.items()))
        if key not in started:
            if engine == "sqlite":
                folder = tmp_path_factory.mktemp("bridge")
                database = f"sqlite:///{folder}/bridge.sqlite3"
            else:
                database = request.getfixturevalue("postgres").new_database()
            started[key] = start_bridge(servers, provider_key, database, **settings)
        return started[key]

    return bridge


@pytest.fixture(scope="package")
def partner(servers: ServerThread) -> Partner:
    """A partner's checkout page whose origin the embedding bridge lists in FRAME_ANCESTORS."""
    shop = Partner()
    shop.url = servers.serve(shop.app())
    return shop


@pytest.fixture(scope="package")
def stranger(servers: ServerThread) -> Partner:
    """The same checkout page on an origin no bridge lists."""
    shop = Partner()
    shop.url = servers.serve(shop.app())
    return shop


@pytest.fixture
def embedding_bridge(bridge_factory: Callable[..., Bridge], partner: Partner) -> Bridge:
    """A bridge that lets ``partner`` (and only it) frame its pages."""
    return bridge_factory(FRAME_ANCESTORS=partner.url)


@pytest.fixture
def bridge(bridge_factory: Callable[..., Bridge]) -> Bridge:
    return bridge_factory()


@pytest.fixture
def session_id() -> str:
    return f"ps_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    # Package scope: Playwright's sync API runs an event loop of its own, which must be gone
    # before the asyncio tests outside this folder start.
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Console:
    """Every console message and page error, with the URL of the page that had it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, str]] = []
        self.expected: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("console", lambda message: self._message(message))
        page.on("pageerror", lambda error: self.messages.append(("pageerror", str(error), "")))

    def _message(self, message: ConsoleMessage) -> None:
        self.messages.append((message.type, message.text, message.location.get("url", "")))

    def expect_status(self, status: int) -> None:
        """Chromium logs a page answered with 4xx or 5xx as an error: expected for this one."""
        self.expected.append(f"the server responded with a status of {status} ")

    def expect_message(self, text: str) -> None:
        """A console error or warning containing ``text`` is expected for this test."""
        self.expected.append(text)

    def logged(self, text: str) -> bool:
        """Whether any console message or page error contained ``text``."""
        return any(text in entry[1] for entry in self.messages)

    def problems(self) -> list[tuple[str, str, str]]:
        return [
            entry
            for entry in self.messages
            if entry[0] in ("error", "warning", "pageerror")
            and not any(expected in entry[1] for expected in self.expected)
        ]


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture(scope="package")
def popup_blocking_browser(browser: Browser) -> Iterator[Browser]:
    """Chromium as customers have it: popups without a user gesture are blocked (Playwright
    turns the blocker off)."""
    blocking = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        ignore_default_args=["--disable-popup-blocking"],
    )
    yield blocking
    blocking.close()


def customer_context(browser: Browser, console: Console) -> BrowserContext:
    """A customer's browser at phone width, every page of it watched by ``console``."""
    context = browser.new_context(viewport={"width": 390, "height": 800})
    context.on("page", console.watch)
    return context


@pytest.fixture
def context(browser: Browser, console: Console) -> Iterator[BrowserContext]:
    context = customer_context(browser, console)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext, console: Console) -> Iterator[Page]:
    """A customer's tab. The test fails if any page logged an error, a CSP violation included."""
    tab = context.new_page()
    yield tab
    assert console.problems() == []


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where page screenshots go: ``scripts/screenshots`` points this at docs/screenshots."""
    folder = os.environ.get("BRIDGE_SCREENSHOTS")
    return Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
