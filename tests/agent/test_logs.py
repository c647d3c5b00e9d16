"""One log call, one line: untrusted text cannot forge or rewrite a log line."""

from __future__ import annotations

import json
import logging
import sys

from nodeagent.agent import logs

FORGED = (
    "edge-01\nFORGED ERROR nodeagent.inventory: all nodes wiped\r\x1b[2K\x85x\u2028y\u2029z\x00"
)


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad hostname " + FORGED)
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord(
        "nodeagent.inventory", logging.WARNING, __file__, 1, msg, args, exc_info
    )


def test_text_format_escapes_every_line_breaking_character() -> None:
    line = logs.TextFormatter().format(_record("registered node %s (%s)", "n-1", FORGED))
    assert line.endswith(
        "WARNING nodeagent.inventory: registered node n-1 (edge-01\\nFORGED ERROR "
        "nodeagent.inventory: all nodes wiped\\r\\x1b[2K\\x85x\\u2028y\\u2029z\\x00)"
    )
    assert line.splitlines() == [line]


def test_text_format_keeps_a_traceback_on_its_line() -> None:
    line = logs.TextFormatter().format(_record("job %s: runner failed", "j-1", exc=True))
    assert line.splitlines() == [line]
    assert "job j-1: runner failed\\nTraceback (most recent call last):\\n" in line
    assert line.endswith(
        "ValueError: bad hostname edge-01\\nFORGED ERROR nodeagent.inventory: "
        "all nodes wiped\\r\\x1b[2K\\x85x\\u2028y\\u2029z\\x00"
    )


def test_text_format_leaves_ordinary_text_alone() -> None:
    text = 'path C:\\temp "quoted" ünïcödé → ok; tabs\tescaped'
    line = logs.TextFormatter().format(_record("%s", text))
    assert line.endswith('nodeagent.inventory: path C:\\temp "quoted" ünïcödé → ok; tabs\\tescaped')


def test_json_format_is_one_line_that_decodes_to_the_message() -> None:
    line = logs.JsonFormatter().format(_record("registered node %s", FORGED))
    assert line.splitlines() == [line]
    assert json.loads(line)["message"] == f"registered node {FORGED}"
