"""Word-level diff of two prompt versions, as data (the CLI and the TUI render it)."""

from __future__ import annotations

import difflib


def word_diff(a: str, b: str) -> list[tuple[str, str]]:
    """[(op, text)] with op in "equal", "delete", "insert", in reading order."""
    wa, wb = a.split(), b.split()
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("equal", " ".join(wa[i1:i2])))
        if op in ("delete", "replace"):
            out.append(("delete", " ".join(wa[i1:i2])))
        if op in ("insert", "replace"):
            out.append(("insert", " ".join(wb[j1:j2])))
    return out


def diff_markup(a: str, b: str) -> str:
    """Rich markup: removed words struck through in red, added words in green."""
    from rich.markup import escape

    style = {"equal": "{}", "delete": "[red strike]{}[/]", "insert": "[green]{}[/]"}
    return " ".join(style[op].format(escape(text)) for op, text in word_diff(a, b))
