"""The bare twin: the least each measured route could do, in plain Quart, under the same server.

- ``GET /pay/<token>``: render a Jinja template shaped like the bridge's bank page (about as many
  autoescaped substitutions, a loop over the form fields, ``tojson``) and as many bytes: static
  script text pads it to ``BENCH_TWIN_PAGE_BYTES`` (the size of the bridge's page in this run).
- ``GET /api/v1/status/<token>``: answer the same JSON as the bridge (``BENCH_TWIN_STATUS``).
- ``POST /webhooks/smart-glocal``: parse the JSON body, answer ``{"status": "accepted"}``.

No token check, no storage, no signature, no headers beyond Quart's own. Run it with
``uvicorn bench.twin:app``; the harness does.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from markupsafe import Markup
from quart import Quart, render_template, request

HERE = Path(__file__).resolve().parent
app = Quart(__name__, template_folder=HERE / "twin_templates")  # url_for("static") as the bridge

STATUS: dict[str, Any] = json.loads(os.environ.get("BENCH_TWIN_STATUS", "{}"))
PAGE_BYTES = int(os.environ.get("BENCH_TWIN_PAGE_BYTES", "0"))
SCRIPT_LINE = "  // static script text, as the bridge includes its page script; no logic here.\n"


def _context(token: str, filler: Markup) -> dict[str, Any]:
    return {
        "lang": "en",
        "title": "Going to your bank",
        "lead": "Your bank needs to confirm this payment. Taking you to its secure page…",
        "method": "post",
        "url": "https://acs.bank.test/challenge?foo=bar",
        "fields": [("PaReq", "sdfew^//asdhbv"), ("MD", "abc75daefnn")],
        "go": "Continue to your bank",
        "again": "You have already been sent to your bank. If you finished there, the result"
        " will appear here.",
        "reopen": "Open the bank page again",
        "hint": "Nothing happening? Use the button above, or return to the shop and try again.",
        "page": {
            "status": "action_required",
            "final": False,
            "status_url": f"/api/v1/status/{token}",
            "next_url": f"/pay/{token}",
            "etag": "0" * 20,
            "action_id": f"{token[:24]}:0",
            "origins": [],
            "onward_url": None,
        },
        "nonce": secrets.token_urlsafe(16),
        "filler": filler,
    }


@app.get("/pay/<token>")
async def pay(token: str) -> str:
    if "FILLER" not in app.config:  # once per process: pad to the bridge page's size
        bare = await render_template("page.html", **_context(token, Markup("")))
        missing = max(PAGE_BYTES - len(bare.encode()), 0)
        app.config["FILLER"] = Markup((SCRIPT_LINE * (missing // len(SCRIPT_LINE) + 1))[:missing])
    return await render_template("page.html", **_context(token, app.config["FILLER"]))


@app.get("/api/v1/status/<token>")
async def status(token: str) -> dict[str, Any]:
    return STATUS


@app.post("/webhooks/smart-glocal")
async def webhook() -> dict[str, str]:
    await request.get_json()
    return {"status": "accepted"}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
