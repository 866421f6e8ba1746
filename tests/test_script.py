"""The embedding script as a dependency: a versioned, immutable URL and a published SRI hash."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"


def integrity(body: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()


async def test_the_script_is_served_at_a_versioned_immutable_url(client: Any) -> None:
    moving = await client.get("/static/js/redirect-bridge.js")
    pinned = await client.get(f"/static/js/redirect-bridge-{version('redirect-bridge')}.js")
    assert moving.status_code == pinned.status_code == 200
    assert await pinned.get_data() == await moving.get_data()
    assert pinned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert pinned.mimetype == "text/javascript"
    assert pinned.headers["X-Content-Type-Options"] == "nosniff"
    # A page on another origin checks the integrity only of a script fetched with CORS.
    for answer in (moving, pinned):
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert (await client.get("/static/js/redirect-bridge-0.0.0.js")).status_code == 404


async def test_the_readme_publishes_the_integrity_of_the_bytes_served(client: Any) -> None:
    """The README's ``<script>`` tag pins this version's URL and its SRI hash; a partner copies
    it. (The script changed? Then it is a new version: raise the version in pyproject.toml,
    and the README's tag with it.)"""
    text = README.read_text()
    tags = re.findall(
        r'<script src="[^"]*/static/js/redirect-bridge-([^"/]+)\.js"\s+'
        r'integrity="([^"]+)"\s+crossorigin="anonymous"></script>',
        text,
    )
    assert tags, "the README shows no pinned <script> tag"
    served = await (await client.get("/static/js/redirect-bridge.js")).get_data()
    for pinned_version, published in tags:
        assert pinned_version == version("redirect-bridge")
        assert published == integrity(served)
