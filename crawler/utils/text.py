"""Text from outside (upstream pages and APIs, stored rows) made safe to show on a terminal.

    >>> clean_text("<b>USD</b>\\x1b[31m")
    '<b>USD</b>'
    >>> clean_text("line one\\nline two")
    'line one line two'
    >>> clean_data({"name": "Apple\\x9b2J", "prices": ["1\\x07"]})
    {'name': 'Apple', 'prices': ['1']}

A terminal obeys escape sequences wherever they come from: a currency of `USD\\x1b[31m` turns
the rest of the screen red, `\\x1b]0;...\\x07` retitles the window, `\\x1b]8;;...` plants a
link, `\\x1b[2J` clears it. `clean_text` removes whole ANSI sequences (CSI, OSC, DCS/APC/PM,
two-byte ESC), then every remaining C0 and C1 control character and DEL, and the Unicode
bidirectional overrides and isolates (text that reads differently than it is). Tabs and line
breaks become spaces, unless `keep_newlines` (a log's traceback). Pure, standard library only:
the normalizers use it at the boundary, the CLI once more before it prints.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["clean_data", "clean_text", "has_controls"]

# ESC (or the C1 forms 0x9b CSI, 0x9d OSC, 0x90 DCS ...) and what follows it, up to the
# sequence's end: CSI ... final byte; OSC/DCS/SOS/PM/APC ... BEL or ST (or the end of text).
_SEQUENCE: Final = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"
)
# What is left: C0 but tab and line breaks, DEL, C1, bidi embeddings/overrides/isolates.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_BREAKS: Final = re.compile(r"[\t\n\r]")
_ANY: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def has_controls(text: str) -> bool:
    """Whether `text` holds anything `clean_text` would change (tabs and newlines included)."""
    return _ANY.search(text) is not None


def clean_text(text: str, *, keep_newlines: bool = False) -> str:
    """`text` without escape sequences or control characters (see the module docstring)."""
    if not has_controls(text):
        return text
    text = _CONTROL.sub("", _SEQUENCE.sub("", text))
    if keep_newlines:
        return text.replace("\r\n", "\n").replace("\r", "\n")
    return _BREAKS.sub(" ", text)


def clean_data(value: Any) -> Any:
    """`value` with every string in it (dict keys too, nested) passed through `clean_text`."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        return {clean_data(key): clean_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clean_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(clean_data(item) for item in value)
    return value
