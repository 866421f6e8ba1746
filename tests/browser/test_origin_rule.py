"""The page script's origin rule, run in Chromium over the table the server's rule is held to."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page

from ..test_hostile_input import ORIGIN_TABLE

PAGE_SCRIPT = Path(__file__).resolve().parents[2] / "templates" / "pay" / "page.js"


def test_the_page_script_matches_origins_as_the_server_does(page: Page) -> None:
    source = PAGE_SCRIPT.read_text()
    rule = source.split("// origin-rule:start")[1].split("// origin-rule:end")[0]
    table = [[pattern, origin] for pattern, origin, _ in ORIGIN_TABLE]
    verdicts = page.evaluate(
        "(table) => {" + rule + "return table.map(function (row) {"
        " return matches(row[0], row[1]); }); }",
        table,
    )
    assert verdicts == [expected for _, _, expected in ORIGIN_TABLE]
