"""Host text made safe to show: no terminal control, no forged lines, no hidden reordering.

Process names, command lines, service output and log lines are written by whoever runs on the
host. Shown raw, ``\\x1b]0;pwned\\x07`` retitles the operator's terminal, ``\\r`` and ``\\n``
forge log lines, U+202E reverses what follows, and bytes that are not UTF-8 (kept by Python
as lone surrogates) cannot even be encoded for a file or a socket. ``printable`` escapes all of
them into visible text (``\\x1b``, ``\\n``, ``\\u202e``, ``\\xff``), so what was there can still
be read, and leaves everything else, emoji included, as it was.
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL; bidi embeddings, overrides and isolates, the Arabic letter mark,
# LRM/RLM and the zero-width space; the line and paragraph separators (line breaks to some
# viewers); a byte-order mark; lone surrogates. ZWJ (U+200D) is left: emoji are built on it.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff"
    "\ud800-\udfff]")
#: Longest process or user name kept: any local user names a process, and on Linux a name
#: can be a whole file name (psutil reads it from argv[0] when comm is cut at 15 bytes).
MAX_NAME = 128

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    char = m.group(0)
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as surrogateescape keeps it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, max_len: int | None = None) -> str:
    """``text`` on one line with every control, bidi and invalid character escaped.

    With ``max_len``, at most that many characters of the input are kept (an ellipsis marks
    the cut), so a name a megabyte long costs nothing further down.
    """
    if max_len is not None and len(text) > max_len:
        text = text[: max_len - 1] + "…"
    return _UNSAFE.sub(_escape, text)


# What json.dumps(ensure_ascii=False) leaves raw that a terminal acts on or hides: C1 controls
# (U+009B is a CSI to some terminals), DEL, bidi and invisible marks, separators, lone
# surrogates. After dumps, these can only stand inside strings, where \uXXXX means the same.
_JSON_UNSAFE = re.compile(
    "[\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")


def json_text(data: object) -> str:
    """``data`` as compact JSON that means the same to a parser and is inert on a terminal:
    non-ASCII text stays readable, every control, bidi or invalid character is escaped."""
    import json

    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)
