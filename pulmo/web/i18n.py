"""Two languages, English and Chinese (zh-CN), from gettext message catalogues.

English is the source language (the message ids); ``locale/zh_CN/*.po`` hold the Chinese
translations, one catalogue per part of the platform (``core.po``, ``viewer.po``, ...), read
with Babel at start and merged. Pages call ``_("...")`` in templates and in code; a message
without a translation shows in English. The user's choice is stored on the user (and, before
login or on a share link, in a cookie).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = {"en": "English", "zh-CN": "中文"}
DEFAULT = "en"


@lru_cache(maxsize=None)
def catalogue(language: str) -> dict[str, str]:
    """msgid -> translation for ``language`` (empty for English)."""
    if language == "en":
        return {}
    from babel.messages.pofile import read_po

    out: dict[str, str] = {}
    folder = LOCALE_DIR / language.replace("-", "_")
    for po in sorted(folder.glob("*.po")):
        with open(po, "rb") as fh:
            cat = read_po(fh, locale=language.replace("-", "_"))
        for m in cat:
            if m.id and m.string and not m.fuzzy and isinstance(m.id, str):
                out[m.id] = m.string
    return out


def translate(language: str, message: str, **values) -> str:
    """``message`` in ``language``, with ``{name}`` fields filled from ``values``."""
    text = catalogue(language if language in LANGUAGES else DEFAULT).get(message, message)
    return text.format(**values) if values else text


def pick(requested: str | None, accept_language: str | None = None) -> str:
    """The language to use: the one asked for when known, else the browser's, else English."""
    if requested in LANGUAGES:
        return requested
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return DEFAULT


@lru_cache(maxsize=None)
def _patterns(language: str) -> tuple:
    """The catalogue's messages with ``{fields}`` as regular expressions (longest first)."""
    out = []
    for msgid in catalogue(language):
        names = re.findall(r"\{(\w+)\}", msgid)
        if not names or len(set(names)) != len(names):
            continue
        parts = re.split(r"\{\w+\}", msgid)
        rx = "".join(re.escape(part) + (f"(?P<{names[i]}>.+?)" if i < len(names) else "")
                     for i, part in enumerate(parts))
        out.append((re.compile(rx, re.S), msgid))
    out.sort(key=lambda t: -len(t[1]))
    return tuple(out)


def translate_message(language: str, text: str) -> str:
    """A message made by code (an error's detail, with its values filled in) in ``language``:
    the catalogue's exact entry, else the entry whose ``{fields}`` match, with the values kept;
    else the message as it is."""
    cat = catalogue(language if language in LANGUAGES else DEFAULT)
    if not cat or not isinstance(text, str):
        return text
    if text in cat:
        return cat[text]
    for rx, msgid in _patterns(language):
        m = rx.fullmatch(text)
        if m:
            values = {k: translate_message(language, v) for k, v in m.groupdict().items()}
            return cat[msgid].format(**values)
    return text
