"""The page's words: each language's catalogue is a file under ``ui/locales/`` (``en.json``, ``ru.json``), read at start.

Two ways a word reaches the page in the browser's language:

- ``t(key)``: a label, help text, button or static Markdown; Gradio translates it in the browser.
- ``tr(lang, key, **values)``: anything the server writes (status lines, messages, plot titles,
  table headers, choice labels), formatted here in the language of the request
  (``language(request)``, from its Accept-Language header, which the browser sets from the same
  setting Gradio's own translation reads).

A catalogue holds ``words`` (key → text), ``fields`` (each ``TrainConfig`` field's [label, help]; English
comes from the field's name and ``help`` metadata), ``choices`` (a setting's values in words; English shows
the value), ``rows`` (what each Compare row trains), ``metrics`` and ``plurals`` (counted words by CLDR
plural category). Adding a language is adding its file (a test checks that it says every key). Messages of
the library's own errors (the bad-input catalogue) stay in its words, the same at the CLI and here.
"""

from __future__ import annotations

import dataclasses
import decimal
import json
import re
from pathlib import Path
from typing import Any

import gradio as gr
from babel import Locale
from babel.numbers import format_decimal, format_percent

from gantune.config import TrainConfig

LOCALES = Path(__file__).parent / "locales"
_CATALOGUES = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(LOCALES.glob("*.json"))}
LANGUAGES = ("en", *sorted(set(_CATALOGUES) - {"en"}))  # English first: the fallback

CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def field_label(name: str) -> str:
    """The catalogue key of a setting's label."""
    return f"field_{name}"


def field_help(name: str) -> str:
    """The catalogue key of a setting's help text."""
    return f"help_{name}"


def _words(lang: str) -> dict[str, str]:
    """A language's words with each setting's label and help (English's from the field itself, another's from its
    ``fields``, English where it has none: a test names any missing)."""
    words = dict(_CATALOGUES[lang]["words"])
    for name, f in CONFIG_FIELDS.items():
        english = (name.replace("_", " "), f.metadata.get("help", ""))
        words[field_label(name)], words[field_help(name)] = _CATALOGUES[lang]["fields"].get(name, english)
    return words


CATALOGUES: dict[str, dict[str, str]] = {lang: _words(lang) for lang in LANGUAGES}
EN, RU = CATALOGUES["en"], CATALOGUES["ru"]
FIELDS_RU: dict[str, list[str]] = _CATALOGUES["ru"]["fields"]
CHOICES: dict[str, dict[str, dict[str, str]]] = {lang: _CATALOGUES[lang]["choices"] for lang in LANGUAGES}
ROW_DESCRIPTIONS: dict[str, dict[str, str]] = {lang: _CATALOGUES[lang]["rows"] for lang in LANGUAGES}
METRICS: dict[str, dict[str, str]] = {lang: _CATALOGUES[lang]["metrics"] for lang in LANGUAGES}
PLURALS: dict[str, dict[str, dict[str, str]]] = {lang: _CATALOGUES[lang]["plurals"] for lang in LANGUAGES}
I18N = gr.I18n(**CATALOGUES)


def t(key: str) -> gr.i18n.I18nData:
    """A label, help text or button that the browser shows in its language."""
    return I18N(key)


def language(request: gr.Request | None) -> str:
    """The page's language for a request: the first of its Accept-Language tags that we speak (else English)."""
    header = ""
    if request is not None:
        header = (getattr(request, "headers", None) or {}).get("accept-language", "") or ""
    ranked = []
    for i, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        match = re.search(r"q=([0-9.]+)", params)
        try:
            q = float(match.group(1)) if match else 1.0
        except ValueError:
            q = 0.0
        ranked.append((-q, i, tag.strip().lower().split("-")[0]))
    return next((code for _, _, code in sorted(ranked) if code in LANGUAGES), "en")


def tr(lang: str, key: str, **values) -> str:
    """The catalogue's text for ``key`` in ``lang`` (English when the language has none), filled with ``values``."""
    text = CATALOGUES.get(lang, EN).get(key) or EN[key]
    return text.format(**values) if values else text


MINUS = "\u2212"  # a formatted number's minus sign on a page in another language than English (CLDR's typography)
# the library's one-line reasons a scorer is unavailable (gantune.metrics), each said anew by a catalogue key
REASONS = (
    (r"(?:BLEURT|semantic similarity) unavailable: '(?P<name>[^']+)' is a hub id and the hub cannot be reached "
     r"\(offline\); (?P<hint>.+)", "reason_hub_unreachable"),
    (r"(?:BLEURT|semantic similarity) unavailable: no checkpoint at '(?P<name>[^']+)' and the hub is offline "
     r"\(HF_HUB_OFFLINE=1\); (?P<hint>.+)", "reason_offline"),
    (r"(?:BLEURT|semantic similarity) unavailable: no checkpoint at '(?P<name>[^']+)'; (?P<hint>.+)",
     "reason_no_checkpoint"),
    (r"(?:BLEURT|semantic similarity) unavailable: could not load '(?P<name>[^']+)'(?: from the hub)?: (?P<error>.+); "
     r"(?P<hint>[^;]+)", "reason_load_failed"),
    (r"semantic similarity unavailable: (?P<package>\S+) is not installed \(pip install \S+\); or (?P<hint>.+)",
     "reason_not_installed"),
)
HINTS = {"pass --bleurt PATH to a local checkpoint": "hint_bleurt",
         "pass a local sentence-transformers model folder": "hint_semantic"}


def reason_text(lang: str, reason: str) -> str:
    """Why a scorer is unavailable: in English the library's line as it is, in another language its words (the
    line as it is when it matches no known reason)."""
    for pattern, key in REASONS if lang != "en" else ():
        if match := re.fullmatch(pattern, reason):
            values = match.groupdict()
            values["hint"] = tr(lang, HINTS[values["hint"]]) if values["hint"] in HINTS else values["hint"]
            return tr(lang, key, **values)
    return reason


def number(lang: str, value: float, digits: int | None = None) -> str:
    """``value`` in the page's locale (Babel, CLDR): ``2,714.5`` in English, ``2 714,5`` in Russian.

    ``digits``: fixed decimals; None: as many as the value has (up to 3).
    """
    if isinstance(value, int) and digits is None:
        digits = 0
    pattern = "#,##0" + ("." + "0" * digits if digits else "" if digits == 0 else ".###")
    try:
        text = format_decimal(value, format=pattern, locale=lang)
    except decimal.InvalidOperation:  # past Decimal's 28 digits with decimals: written as Python writes it
        text = str(value)
    return text if lang == "en" else text.replace("-", MINUS)


def signed(lang: str, value: float, digits: int) -> str:
    """A difference with its sign always written: ``+0.030``, ``−0,030``."""
    text = number(lang, abs(value), digits)
    return text if round(value, digits) == 0 else ("+" if value > 0 else "−") + text


def exact(lang: str, value: float) -> str:
    """A setting's number with every decimal it has, in the page's locale: ``0.0005``, ``0,0005``, ``3``."""
    return number(lang, value, max(0, -decimal.Decimal(repr(value)).normalize().as_tuple().exponent))


def plural(lang: str, key: str, n: int) -> str:
    """``n`` with its counted word in the form the language's plural rule picks (``4 пары``, ``5 пар``)."""
    forms = PLURALS.get(lang, PLURALS["en"])[key]
    return forms.get(Locale.parse(lang).plural_form(n), forms["other"]).format(n=number(lang, n, 0))


def choice_label(lang: str, field: str, value: str) -> str:
    """A setting's value as the page says it: ``value`` in English, ``слово (value)`` in a language with words for it."""
    word = CHOICES.get(lang, {}).get(field, {}).get(value)
    return f"{word} ({value})" if word else str(value)


def choices(lang: str, field: str, values: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """(label, value) pairs for a dropdown or radio of ``field``'s values."""
    return [(choice_label(lang, field, v), v) for v in values]


def setting_name(lang: str, name: str) -> str:
    """A setting as a person reads it: its label in the page's language (with its flag, ``--epochs``, in Russian)."""
    label = tr(lang, field_label(name))
    return f"«{label}» (--{name.replace('_', '-')})" if lang != "en" else label


def metric_label(lang: str, key: str) -> str:
    return METRICS.get(lang, METRICS["en"]).get(key) or METRICS["en"].get(key, key)


def row_description(lang: str, row: str) -> str | None:
    """What a Compare row trains, in the page's language; None when the catalogue has no words for it yet."""
    return ROW_DESCRIPTIONS.get(lang, ROW_DESCRIPTIONS["en"]).get(row)


def error_text(exc: Exception, lang: str) -> str:
    """A refusal in the page's words: a page's own (``text``), a library one by its kind (``key``) with the field's
    label, or else the library's one line as it is."""
    text = getattr(exc, "text", None)
    if callable(text):
        return text(lang)
    key = getattr(exc, "key", None)
    if key and f"err_{key}" in EN:
        values = {k: number(lang, v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                  for k, v in getattr(exc, "values", {}).items()}
        setting = getattr(exc, "setting", None)
        if setting in CONFIG_FIELDS:
            values["name"] = setting_name(lang, setting)
        try:
            return tr(lang, f"err_{key}", **values)
        except (KeyError, IndexError):  # a kind whose values this catalogue does not know: the library's words
            pass
    if key and key in EN:
        return tr(lang, key, **getattr(exc, "values", {}))
    return str(exc)


def percent(lang: str, share: float) -> str:
    """``0.5`` as ``50%`` (English) or ``50 %`` (Russian)."""
    return format_percent(share, locale=lang)


def title_text(status: Any, lang: str) -> str:
    """A job's title in the page's language (a setting's value among its values said as the page says it)."""
    if not status.title_key:
        return status.title
    args = {k: choice_label(lang, k, v) if k in CHOICES.get(lang, {}) else v for k, v in status.title_args.items()}
    return tr(lang, status.title_key, **args)
