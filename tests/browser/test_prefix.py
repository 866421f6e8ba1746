"""The bridge under a path of the shop's own site, behind a real nginx: Debian's nginx, started
here with docs/deploy/nginx-under-a-path.conf as written (only the bridge's address changed),
forwards ``/bridge/…`` to the bridge as ``/…``. A customer's whole payment in Chromium stays
under ``/bridge/``: every page, stylesheet, favicon, poll and form the browser asks for."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.sync_api import Page, Request, Response, expect

from ..payloads import redirect, webhook
from ..servers import free_port
from .harness import Bank, Bridge, ServerThread, start_bridge, wait_until

SNIPPET = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "nginx-under-a-path.conf"
DOCUMENTED_UPSTREAM = "http://127.0.0.1:8000/"
PREFIX = "/bridge"


class Nginx:
    """nginx in the foreground with a prefix folder of its own, on a free loopback port, in
    front of the bridge at ``upstream``."""

    def __init__(self, folder: Path, upstream: str) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstream = upstream
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("nginx", path="/usr/sbin:/usr/bin:/usr/local/sbin")
        assert binary is not None, "scripts/test installs nginx"
        text = SNIPPET.read_text()
        assert DOCUMENTED_UPSTREAM in text
        (self.folder / "bridge.conf").write_text(text.replace(DOCUMENTED_UPSTREAM, self.upstream))
        (self.folder / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 1;\npid {self.folder}/nginx.pid;\n"
            f"error_log {self.folder}/error.log;\nevents {{ worker_connections 64; }}\n"
            "http {\n"
            f"  access_log {self.folder}/access.log;\n"
            # Nothing to disk: workers may run as another user, who cannot write here.
            "  proxy_max_temp_file_size 0;\n"
            "  server {\n"
            f"    listen 127.0.0.1:{self.port};\n"
            "    server_name shop.example;\n"
            "    location / { return 404; }\n"  # the shop's own pages: none here
            f"    include {self.folder}/bridge.conf;\n"
            "  }\n"
            "}\n"
        )
        command = [binary, "-p", str(self.folder), "-e", f"{self.folder}/error.log"]
        self.process = subprocess.Popen(
            [*command, "-c", str(self.folder / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers)

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError((self.folder / "error.log").read_text())
        try:
            with urllib.request.urlopen(f"{self.url}{PREFIX}/healthz", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def proxied(
    servers: ServerThread, provider_key: rsa.RSAPrivateKey, tmp_path: Path
) -> Iterator[Bridge]:
    """The bridge as the shop's site offers it: a client of ``http://127.0.0.1:PORT/bridge``
    (nginx's port is chosen first, so that BRIDGE_PUBLIC_URL can name it)."""
    nginx = Nginx(tmp_path, "")
    public_url = f"{nginx.url}{PREFIX}"
    database = f"sqlite:///{tmp_path}/bridge.sqlite3"
    direct = start_bridge(servers, provider_key, database, PUBLIC_URL=public_url)
    nginx.upstream = f"{direct.url}/"
    nginx.start()
    try:
        yield Bridge(public_url, provider_key, direct.api_key)
    finally:
        nginx.stop()


def test_a_payment_under_a_path_stays_under_it(
    page: Page, proxied: Bridge, bank: Bank, session_id: str
) -> None:
    requests: list[Request] = []
    answers: list[Response] = []
    page.on("request", lambda request: requests.append(request))
    page.on("response", lambda answer: answers.append(answer))

    token = proxied.token(session_id)  # the partner's API, through nginx
    assert token["pay_url"].startswith(f"{proxied.url}/pay/")
    page.goto(token["pay_url"])
    expect(page.get_by_role("heading")).to_have_text("Preparing your payment")
    # The stylesheet came through: the card is drawn as bridge.css says.
    assert page.locator("main.card").evaluate("e => getComputedStyle(e).maxWidth") == "448px"

    url = f"{bank.url}/acs/challenge"
    params = {"PaReq": "p", "MD": "m", "TermUrl": token["return_url"]}
    interaction = redirect(url=url, base_url=url, params=params)
    proxied.send(webhook("action_required", session_id, interaction=interaction))
    page.wait_for_url(f"{url}?foo=bar", timeout=5000)  # the waiting page moved on by itself
    page.click("#complete")  # the bank posts back to the return URL under the prefix
    page.wait_for_url(token["return_url"])
    expect(page.get_by_role("heading")).to_have_text("Checking the result")
    proxied.send(webhook("payment_finished", session_id, session_status="accepted"))
    expect(page.get_by_role("heading")).to_have_text("Payment complete", timeout=5000)

    bridge_origin = f"{urlsplit(proxied.url).scheme}://{urlsplit(proxied.url).netloc}"
    asked = [request.url for request in requests]
    for where in asked:
        if not where.startswith(bank.url):
            assert where.startswith(f"{bridge_origin}{PREFIX}/"), where
    loaded = {answer.url: answer.status for answer in answers}
    assert loaded[f"{proxied.url}/static/css/bridge.css"] == 200
    assert not [(where, status) for where, status in loaded.items() if status >= 400]
    assert any("/api/v1/status/" in where for where in asked), "the page polled"
    assert bank.posts()[0].fields == list(params.items())
