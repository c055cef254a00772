"""Log lines that request data cannot forge: control characters are escaped, never written raw.

A URI, a header, a token's subject or an exception message about them can carry CR/LF (Orthanc decodes
``%0d%0a`` in paths before the filter sees them) and so could start a fake log line. Every message the
plugin hands to Orthanc's log goes through ``loggable`` (pacs.log_*): one line, always.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def loggable(message: str) -> str:
    """``message`` as one log line: CR, LF, tabs and every other control character escaped (``\\r``, ``\\x1b``)."""
    return _UNSAFE.sub(_escape, message)
