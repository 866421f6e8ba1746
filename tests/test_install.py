"""The package as users get it: the built wheel, installed into a fresh virtual environment
outside the checkout, serving a whole journey with ``redirect-bridge serve``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from quart import Quart

from .conftest import API_KEY, public_pem
from .payloads import redirect, webhook
from .servers import Client, Served, environment

ROOT = Path(__file__).resolve().parent.parent


class Installed:
    """A virtual environment holding the wheel alone; its dependencies come from the test
    environment (a plain path, so the checkout's own editable install is not among them)."""

    def __init__(self, folder: Path) -> None:
        wheels = folder / "dist"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
            + ["--no-build-isolation", "--wheel-dir", str(wheels), str(ROOT)],
            check=True,
            capture_output=True,
        )
        (self.wheel,) = wheels.glob("redirect_bridge-*.whl")
        self.venv = folder / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)], check=True)
        self.python = self.venv / "bin" / "python"
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(self.python), "install", "--quiet"]
            + ["--no-deps", "--no-index", str(self.wheel)],
            check=True,
            capture_output=True,
        )
        self.site = Path(self.run("import sysconfig; print(sysconfig.get_paths()['purelib'])"))
        (self.site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        self.script = self.venv / "bin" / "redirect-bridge"

    def run(self, code: str) -> str:
        done = subprocess.run(
            [str(self.python), "-c", code], check=True, capture_output=True, text=True, cwd="/"
        )
        return done.stdout.strip()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return Installed(tmp_path_factory.mktemp("install"))


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def settings(folder: Path, key: rsa.RSAPrivateKey) -> dict[str, str]:
    return environment(
        DATABASE_URL=f"sqlite:///{folder / 'bridge.db'}",
        SECRET_KEY="install-test-secret-0123456789abcdef",
        SG_PUBLIC_KEY=public_pem(key),
        API_KEYS=json.dumps([API_KEY]),
    )


@pytest.fixture
def served(
    installed: Installed, key: rsa.RSAPrivateKey, tmp_path: Path
) -> Iterator[tuple[Served, Client]]:
    server = Served(
        settings(tmp_path, key), script=installed.script, cwd=tmp_path, log=tmp_path / "log"
    ).start()
    yield server, Client(server.url, key, API_KEY)
    server.stop()


def test_the_wheel_carries_the_templates_and_static_files(installed: Installed) -> None:
    from zipfile import ZipFile

    names = set(ZipFile(installed.wheel).namelist())
    for folder in ("templates", "static"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file():
                assert f"app/{path.relative_to(ROOT)}" in names, path
    assert "app/translations/ru.json" in names


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    where = installed.run("import app; print(app.__file__)")
    assert Path(where).is_relative_to(installed.site), where
    assert installed.run("from app import assets; print(assets.TEMPLATES)") == str(
        installed.site / "app" / "templates"
    )


def test_an_installed_copy_walks_a_whole_journey(served: tuple[Served, Client]) -> None:
    server, client = served
    token = client.token("ps_installed")
    pay = "/pay/" + token["token"]
    assert b"Preparing your payment" in client.get(pay)
    client.send(webhook("ready_to_confirm", "ps_installed", updated_at="2027-01-15T07:00:00Z"))
    assert b"Confirming your payment" in client.get(pay)
    bank = redirect(url="https://acs.bank.test/acs?x=1", qs={}, params={"PaReq": "p&q", "MD": "7"})
    client.send(
        webhook(
            "action_required",
            "ps_installed",
            interaction=bank,
            updated_at="2027-01-15T07:01:00Z",
        )
    )
    html = client.get(pay).decode()
    assert '<form id="bank-form" method="post" action="https://acs.bank.test/acs?x=1">' in html
    assert re.search(r'name="PaReq" value="p&amp;q"', html)
    assert b"Checking the result" in client.get(pay + "/return")
    client.send(
        webhook(
            "payment_finished",
            "ps_installed",
            session_status="accepted",
            updated_at="2027-01-15T07:02:00Z",
        )
    )
    assert b"Payment complete" in client.get(pay)
    assert client.status(token["token"])["status"] == "succeeded"
    for path in ("js/redirect-bridge.js", "css/bridge.css", "favicon.svg"):
        assert client.get(f"/static/{path}") == (ROOT / "static" / path).read_bytes()
    missing = client.call("GET", "/pay/not-a-token")
    assert missing.status == 404 and b"This link is not valid" in missing.body
    assert client.call("GET", "/readyz").status == 200


def test_serve_refuses_to_start_without_its_templates(
    installed: Installed, key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(installed.venv, broken, symlinks=True)
    site = broken / installed.site.relative_to(installed.venv)
    shutil.rmtree(site / "app" / "templates")
    done = subprocess.run(
        [str(broken / "bin" / "python"), "-m", "app", "serve", "--port", "1"],
        env=settings(tmp_path, key),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("redirect-bridge: cannot serve: the templates or static files")
    assert "pay/layout.html" in lines[0]


async def test_readyz_is_not_ready_when_the_pages_cannot_render(
    app: Quart, client: Any, tmp_path: Path
) -> None:
    assert (await client.get("/readyz")).status_code == 200
    app.template_folder = str(tmp_path)  # an empty folder: no page could render
    answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert await answer.get_json() == {"status": "unavailable"}
