from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from app import i18n

from .conftest import Partner

ROOT = Path(__file__).resolve().parent.parent
MARKED = re.compile(r"""_\(\s*(["'])(.+?)\1\s*\)""")


def marked_sentences() -> set[str]:
    found = set()
    for template in (ROOT / "templates").rglob("*.html"):
        found |= {match[1] for match in MARKED.findall(template.read_text())}
    return found


def test_every_marked_sentence_has_a_russian_translation() -> None:
    catalog = json.loads((ROOT / "app/translations/ru.json").read_text(encoding="utf-8"))
    sentences = marked_sentences()
    assert len(sentences) > 30
    assert sorted(sentences - set(catalog)) == []
    assert sorted(set(catalog) - sentences) == []  # no translation left behind
    assert all(value and value != key for key, value in catalog.items())


async def test_a_translation_is_text_escaped_like_any_other(
    partner: Partner, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(i18n._CATALOGS["ru"], "Preparing your payment", '<b>"50%" & more</b>')
    token = await partner.token()
    html = await (await client.get(f"/pay/{token}?lang=ru")).get_data(as_text=True)
    assert "<h1>&lt;b&gt;&#34;50%&#34; &amp; more&lt;/b&gt;</h1>" in html


@pytest.mark.parametrize(
    ("accept", "query", "lang", "heading"),
    [
        ("ru-RU,ru;q=0.9,en;q=0.5", "", "ru", "Готовим платёж"),
        ("en-GB,en;q=0.9", "", "en", "Preparing your payment"),
        ("de-DE,de;q=0.9", "", "en", "Preparing your payment"),
        ("ru", "?lang=en", "en", "Preparing your payment"),
        ("en", "?lang=ru", "ru", "Готовим платёж"),
        ("ru", "?lang=xx", "ru", "Готовим платёж"),
    ],
)
async def test_the_language_comes_from_the_query_then_the_browser(
    partner: Partner, client: Any, accept: str, query: str, lang: str, heading: str
) -> None:
    token = await partner.token()
    response = await client.get(f"/pay/{token}{query}", headers={"Accept-Language": accept})
    html = await response.get_data(as_text=True)
    assert f'<html lang="{lang}">' in html
    assert f"<h1>{heading}</h1>" in html


async def test_a_chosen_language_is_kept_when_the_page_moves_on(
    partner: Partner, client: Any
) -> None:
    token = await partner.token()
    html = await (await client.get(f"/pay/{token}?lang=ru")).get_data(as_text=True)
    assert f'"next_url": "/pay/{token}?lang=ru"' in html


async def test_the_404_page_speaks_russian_too(client: Any) -> None:
    response = await client.get("/pay/garbage", headers={"Accept-Language": "ru"})
    assert "Ссылка недействительна" in await response.get_data(as_text=True)
