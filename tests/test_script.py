"""The embedding script as a dependency: versioned, immutable URLs and a published SRI hash."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

from app import assets

README = Path(__file__).resolve().parent.parent / "README.md"
SCRIPTS = assets.STATIC / "js"


def integrity(body: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()


def releases() -> dict[str, bytes]:
    """Every released script kept in the package, by version."""
    found = (re.fullmatch(r"redirect-bridge-(.+)\.js", path.name) for path in SCRIPTS.iterdir())
    return {match[1]: (SCRIPTS / match[0]).read_bytes() for match in found if match}


def test_the_script_as_it_is_now_is_this_versions_release() -> None:
    """A changed script is a new release: raise the version in pyproject.toml, keep the new
    bytes as js/redirect-bridge-{version}.js beside the older ones, and give the README's tag
    the new version and hash. A release already out never changes."""
    current = (SCRIPTS / "redirect-bridge.js").read_bytes()
    assert releases().get(version("redirect-bridge")) == current


async def test_every_release_is_served_at_its_immutable_url(client: Any) -> None:
    moving = await client.get("/static/js/redirect-bridge.js")
    assert moving.status_code == 200
    assert moving.headers["Access-Control-Allow-Origin"] == "*"
    for number, body in releases().items():
        pinned = await client.get(f"/static/js/redirect-bridge-{number}.js")
        assert pinned.status_code == 200
        assert await pinned.get_data() == body
        assert pinned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert pinned.mimetype == "text/javascript"
        assert pinned.headers["X-Content-Type-Options"] == "nosniff"
        # A page on another origin checks the integrity only of a script fetched with CORS.
        assert pinned.headers["Access-Control-Allow-Origin"] == "*"
    for unknown in ("0.0.0", "..%2Fcss%2Fbridge", "x"):
        assert (await client.get(f"/static/js/redirect-bridge-{unknown}.js")).status_code == 404


async def test_the_readme_publishes_the_integrity_of_the_bytes_served(client: Any) -> None:
    """The README's ``<script>`` tag pins this version's URL and its SRI hash; a partner
    copies it."""
    tags = re.findall(
        r'<script src="[^"]*/static/js/redirect-bridge-([^"/]+)\.js"\s+'
        r'integrity="([^"]+)"\s+crossorigin="anonymous"></script>',
        README.read_text(),
    )
    assert tags, "the README shows no pinned <script> tag"
    for pinned_version, published in tags:
        assert pinned_version == version("redirect-bridge")
        served = await client.get(f"/static/js/redirect-bridge-{pinned_version}.js")
        assert published == integrity(await served.get_data())
