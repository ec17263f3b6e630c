"""Diffs of two prompt versions, as data (the CLI and the TUI render them).

Two granularities:

* :func:`word_diff` - whitespace-separated words, for a compact inline view.
* :func:`side_by_side` - tokens: words, single punctuation marks and the whitespace
  between them, so the pieces join back into the exact texts and a one-token edit (what a GReaTer step
  makes) shows as one changed token, not a changed word group.
"""

from __future__ import annotations

import difflib
import re

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)


def tokens(text: str) -> list[str]:
    """Words, punctuation marks and whitespace runs; ``"".join(tokens(t)) == t``."""
    return _TOKEN.findall(text)


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


def side_by_side(a: str, b: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Token-level diff as two segment lists: the old text and the new text.

    Each list is [(op, text)] whose texts join back into ``a`` (left) and ``b`` (right); op is "equal",
    "delete" (left only), "insert" (right only) or "replace" (on both sides, changed tokens).
    """
    ta, tb = tokens(a), tokens(b)
    left: list[tuple[str, str]] = []
    right: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ta, b=tb, autojunk=False).get_opcodes():
        if op == "equal":
            left.append(("equal", "".join(ta[i1:i2])))
            right.append(("equal", "".join(tb[j1:j2])))
        elif op == "delete":
            left.append(("delete", "".join(ta[i1:i2])))
        elif op == "insert":
            right.append(("insert", "".join(tb[j1:j2])))
        else:
            left.append(("replace", "".join(ta[i1:i2])))
            right.append(("replace", "".join(tb[j1:j2])))
    return left, right


def diff_stats(a: str, b: str) -> dict:
    """Counts of changed tokens (whitespace not counted)."""
    ta, tb = tokens(a), tokens(b)
    removed = added = 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ta, b=tb, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            removed += sum(1 for t in ta[i1:i2] if not t.isspace())
        if op in ("insert", "replace"):
            added += sum(1 for t in tb[j1:j2] if not t.isspace())
    return {"removed": removed, "added": added, "unchanged": sum(1 for t in tb if not t.isspace()) - added}


_STYLE = {"equal": "", "delete": "white on dark_red", "insert": "black on green", "replace": "black on yellow"}


def side_by_side_text(a: str, b: str):
    """Both panes as Rich ``Text`` (no markup parsing, so any prompt text is safe): removed tokens on red,
    added on green, replaced on yellow. Changed whitespace shows as ``·``."""
    from rich.text import Text

    left, right = side_by_side(a, b)

    def render(segments) -> Text:
        out = Text()
        for op, text in segments:
            if op != "equal" and not text.strip():
                text = text.replace(" ", "·")
            out.append(text, style=_STYLE[op])
        return out

    return render(left), render(right)


def diff_markup(a: str, b: str) -> str:
    """Rich markup: removed words struck through in red, added words in green."""
    from rich.markup import escape

    style = {"equal": "{}", "delete": "[red strike]{}[/]", "insert": "[green]{}[/]"}
    return " ".join(style[op].format(escape(text)) for op, text in word_diff(a, b))
