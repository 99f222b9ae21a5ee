"""The page's catalogues (ui/locales/*.json): every language says every key, with the same placeholders."""

from __future__ import annotations

import json
import re

import pytest

from ui.i18n import CATALOGUES, CONFIG_FIELDS, LANGUAGES, LOCALES

FILES = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(LOCALES.glob("*.json"))}
OTHERS = [lang for lang in LANGUAGES if lang != "en"]


def test_a_language_is_a_file():
    assert set(LANGUAGES) == set(FILES) and LANGUAGES[0] == "en" and len(LANGUAGES) >= 2
    assert all(set(words) == {"words", "fields", "choices", "rows", "metrics", "plurals"} for words in FILES.values())


@pytest.mark.parametrize("lang", OTHERS)
def test_every_language_says_every_key_with_the_same_placeholders(lang):
    english, other = FILES["en"], FILES[lang]
    for part in ("words", "rows", "metrics", "plurals"):
        assert set(other[part]) == set(english[part]), (lang, part, set(other[part]) ^ set(english[part]))
    assert set(other["fields"]) == set(CONFIG_FIELDS), (lang, set(other["fields"]) ^ set(CONFIG_FIELDS))
    chosen = {f.name for f in CONFIG_FIELDS.values() if f.metadata.get("choices")}
    assert set(other["choices"]) == chosen, (lang, set(other["choices"]) ^ chosen)
    for key, text in CATALOGUES["en"].items():
        assert set(re.findall(r"\{(\w+)", CATALOGUES[lang][key])) == set(re.findall(r"\{(\w+)", text)), (lang, key)
