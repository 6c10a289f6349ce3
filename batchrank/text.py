"""Text shown to a person at a terminal, made safe: :func:`printable`.

Titles, ids, file names and values in error messages come from input files and job files. A
control character in them (an ESC starting a clear-screen or window-title sequence, a carriage
return overwriting the line, a C1 control, a bidi override reordering what follows) would act
on the operator's terminal instead of being shown. Everything batchrank prints for humans goes
through :func:`printable`; JSON log lines need nothing more, as ``json.dumps`` escapes controls.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]

# Bidi embeddings, overrides and isolates, marks, and the Arabic letter mark: invisible
# characters that reorder or disguise the text around them (CVE-2021-42574, "Trojan Source").
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _unsafe(ch: str) -> bool:
    return ch in _BIDI or unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def printable(value: object, *, keep_newlines: bool = False) -> str:
    """``str(value)`` with control characters shown as escapes (``\\x1b``, ``\\u202e``).

    C0 and C1 controls, DEL, line / paragraph separators and bidi controls are escaped; ordinary
    Unicode (accents, CJK, emoji) is kept as is. The result is for reading, not for parsing back:
    a backslash already in the text is left alone.

    Args:
        value: anything; it is converted with ``str``.
        keep_newlines: keep ``\\n`` (for multi-line text such as usage messages); every other
            control, ``\\r`` and ``\\t`` included, is still escaped.
    """
    text = str(value)
    if text.isprintable() and not any(ch in _BIDI for ch in text):
        return text  # the common case, without a per-character loop
    return "".join(
        _escape(ch) if _unsafe(ch) and not (keep_newlines and ch == "\n") else ch for ch in text
    )
