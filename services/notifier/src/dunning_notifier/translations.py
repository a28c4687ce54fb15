"""The words of the shipped templates in the customer's language: gettext catalogues in
`locale/<lang>/LC_MESSAGES/messages.po` (English is the msgid, so English needs no catalogue).

The .po files are the only thing in git: a catalogue is compiled in memory with babel on first use
(read_po, write_mo) and kept for the life of the process, so there is no build step and no
generated .mo to keep in step. `translations_for("de-AT")` tries `de_AT`, then `de`, then falls
back to English (NullTranslations); `template_callables` wraps a catalogue's gettext/ngettext the
way Jinja's newstyle i18n does (placeholders filled after translation, escaped in HTML), which the
renderer passes to every render. How to add a language or update the catalogues:
docs/templates-i18n.md.
"""

import gettext
from collections.abc import Callable
from functools import cache, lru_cache
from io import BytesIO
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2.ext import _make_new_gettext, _make_new_ngettext, _make_new_pgettext  # Jinja's newstyle wrappers

LOCALE_DIR = Path(__file__).with_name("locale")
DOMAIN = "messages"


def languages() -> list[str]:
    """The catalogues shipped (`de`, `fr`, `pt_PT`, ...), English not included."""
    return sorted(p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


@cache
def _compiled(name: str) -> gettext.NullTranslations | None:
    po = LOCALE_DIR / name / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not po.is_file():
        return None
    with po.open("rb") as f:
        catalog = read_po(f, locale=name, domain=DOMAIN)
    mo = BytesIO()
    write_mo(mo, catalog, use_fuzzy=False)  # a fuzzy (unreviewed) entry stays English
    mo.seek(0)
    return Translations(fp=mo, domain=DOMAIN)


@lru_cache(maxsize=256)
def translations_for(locale_tag: str | None) -> gettext.NullTranslations:
    """The catalogue for a BCP 47 tag: `pt-PT` -> pt_PT, else pt; an unknown language -> English."""
    parts = (locale_tag or "").replace("-", "_").split("_")
    lang = parts[0].lower()
    candidates = [f"{lang}_{parts[1].upper()}", lang] if len(parts) > 1 and parts[1] else [lang]
    for name in candidates:
        found = _compiled(name) if name and name.replace("_", "").isalpha() else None
        if found is not None:
            return found
    return gettext.NullTranslations()


@lru_cache(maxsize=256)
def template_callables(locale_tag: str | None) -> dict[str, Callable[..., Any]]:
    """`gettext`, `ngettext` and `pgettext` for a template's render context (Jinja newstyle: `_("Dear %(name)s,",
    name=...)`, `ngettext("%(num)d day", "%(num)d days", n)`)."""
    tr = translations_for(locale_tag)
    return {
        "gettext": _make_new_gettext(tr.gettext),
        "ngettext": _make_new_ngettext(tr.ngettext),
        "pgettext": _make_new_pgettext(tr.pgettext),
    }
