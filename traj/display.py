"""Showing text that came from a store: data, never markup, never terminal control.

Layer names, paths, recipe fields, metric names and ``created`` are whatever the store says.
Before they reach a terminal (through rich), a Markdown file or a matplotlib figure they pass
through one of these helpers:

* :func:`printable` replaces every control character with a visible escape (``\\x1b``,
  ``\\n``, ``\\u202e``): C0 (tab and newline included, so one error stays one line), DEL,
  C1, the bidirectional overrides and isolates (which reorder what a reader sees) and the
  line/paragraph separators. ESC, OSC and CSI sequences (window title, clipboard, clearing the
  screen, hyperlinks) therefore never reach the terminal.
* :func:`markup` is :func:`printable` then :func:`rich.markup.escape`, for interpolation into a
  rich markup string (``[/]`` and ``[link=...]`` print as themselves).
* :func:`mathtext` is :func:`printable` with every ``$`` escaped, so matplotlib never parses store
  text as mathtext (``$\\undefined{$`` would raise when the figure is drawn); report figures are
  also drawn with ``text.usetex`` off (:func:`traj.plots.common.figure_png`).
* :func:`markdown` is :func:`printable` with HTML and Markdown specials escaped, so report.md
  shows the text as report.html does (``html.escape``), table pipes included.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["markdown", "markup", "mathtext", "printable"]

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]|~$])")  # inline markup; links and images need '[' and ']'
_BLOCK_START = re.compile(r"[#+=-]|\d{1,9}[.)](?: |$)")  # headings, quotes, lists, setext underlines
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: Any) -> str:
    """``str(value)`` with every control character replaced by a visible escape; one line."""
    return _CONTROL.sub(_escape_control, str(value))


def markup(value: Any) -> str:
    """Text for a rich markup string: printable, with rich's markup escaped."""
    from rich.markup import escape

    return escape(printable(value))


def mathtext(value: Any) -> str:
    """Text for matplotlib: printable, with ``$`` escaped so it is never parsed as mathtext.

    A leading ``_`` gets a space before it: matplotlib hides legend labels that start with one.
    """
    text = printable(value).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def markdown(value: Any, *, block: bool = False) -> str:
    """Text for Markdown: printable, HTML specials as entities, Markdown punctuation backslash-escaped.

    ``block=True`` is for text that starts a line (a paragraph): a leading ``#``, ``-``, ``+``,
    ``=`` or ``1.`` is escaped too (``>`` is already ``&gt;``), and leading spaces become entities (no code block).
    """
    text = "".join(_HTML.get(c, c) for c in _MARKDOWN.sub(r"\\\1", printable(value)))
    if block:
        body = text.lstrip(" ")
        if _BLOCK_START.match(body):
            digits = len(body) - len(body.lstrip("0123456789"))
            body = body[:digits] + "\\" + body[digits:]
        text = "&#32;" * (len(text) - len(text.lstrip(" "))) + body
    return text
