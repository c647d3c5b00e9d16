"""Logging: one line per event, plain text or JSON (for journald and log shippers).

A log call is always one line, whatever its arguments: a node-reported hostname with a
newline in it must not forge a line of its own in the inventory's log. The text format
escapes control characters (C0, DEL, C1 and the Unicode line and paragraph separators) as
\\n, \\r, \\t, \\xHH or \\uHHHH, a traceback included, which then stays on its
record's line. JSON escapes C0 itself; the rest, which readers such as Python's splitlines
take for line ends, it writes as \\uHHHH. Backslashes are left as they are, so ordinary
messages read exactly as written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_JSON_UNESCAPED = re.compile("[\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with every control character written out, so it cannot end or rewrite a line."""
    return _CONTROL.sub(_escape_one, text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return escape(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        line = json.dumps(entry, ensure_ascii=False)
        return _JSON_UNESCAPED.sub(lambda m: f"\\u{ord(m.group(0)):04x}", line)


def setup(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
