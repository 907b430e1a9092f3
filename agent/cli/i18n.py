"""Messages for people (the doctor's report) in the language of their locale.

Catalogs are gettext .mo files shipped in the package under
`agent/cli/locale/<lang>/LC_MESSAGES/broadcast-agent.mo`, compiled from the .po sources beside
them (docs/field.md says how). The language comes from LANGUAGE, LC_ALL, LC_MESSAGES or
LANG, as for any gettext program: `LANG=vi_VN.UTF-8` gives Vietnamese; English otherwise.
Logs and the JSON output stay in English.
"""

from __future__ import annotations

import gettext
import os
from pathlib import Path

DOMAIN = "broadcast-agent"
LOCALE_DIR = Path(__file__).parent / "locale"


def translator() -> gettext.NullTranslations:
    """The catalog for the current environment's language (identity when there is none)."""
    return gettext.translation(DOMAIN, localedir=LOCALE_DIR, fallback=True)


def vietnamese_unless_english() -> gettext.NullTranslations:
    """Vietnamese, unless the locale's language is English: for what is read in the commune
    office (the report), where an unset or ``C`` locale must not mean English."""
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable)
        if value:
            if value.split(":")[0].lower().startswith("en"):
                return gettext.NullTranslations()
            break
    return gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=["vi"])
