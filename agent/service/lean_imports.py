"""What the daemon keeps out of its interpreter at import: a byte of RSS here is a byte on
every one of the controllers (issue 10's budget: 45 MB for the agent process)."""

from __future__ import annotations

import sys
import warnings


def without_charset_detection() -> None:
    """Keeps requests from importing a character set detector (charset_normalizer, 2.5 MB;
    chardet if present). requests uses one only to guess the encoding of a text body that
    does not declare it (Response.apparent_encoding, psf/requests#5871), and without one it
    takes UTF-8: the daemon reads JSON, which requests decodes by the JSON rules, and media
    as bytes. Call before requests is imported."""
    for detector in ("charset_normalizer", "chardet"):
        sys.modules.setdefault(detector, None)  # type: ignore[arg-type]  # import: ImportError
    warnings.filterwarnings("ignore", message="Unable to find acceptable character detection",
                            module="requests")
