"""Small renderers of the TUI: clipped cells, a table refill that keeps the cursor, the live prompt, the score
sparkline and the evaluation heat map."""

from __future__ import annotations

from contextlib import contextmanager

from textual.widgets import DataTable


def clip(text: str, width: int) -> str:
    """One line of at most `width` characters, with an ellipsis where it was cut."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@contextmanager
def keep_cursor(table: DataTable):
    """Refill a table and keep the selected row (by key) where it was: after tagging prompt 2 the next key acts on
    prompt 2, not on whatever row 1 holds now."""
    key = None
    if table.row_count:
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # no valid cursor
            key = None
    table.clear()
    yield table
    if key is not None:
        try:
            table.move_cursor(row=table.get_row_index(key), animate=False)
        except Exception:  # the row is gone (deleted, or filtered out by a search)
            pass


def escape_markup(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def highlight_token(prompt: str, token: str, changed: bool) -> str:
    from rich.markup import escape

    if not changed or not token.strip() or token not in prompt:
        return escape(prompt)
    i = prompt.rfind(token)
    return escape(prompt[:i]) + "[reverse green]" + escape(token) + "[/]" + escape(prompt[i + len(token) :])


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    bars = "▁▂▃▄▅▆▇█"
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(bars[int((v - lo) / span * (len(bars) - 1))] for v in values[-60:]) + f"  {values[-1]:.3f}"


def heatmap(evals: list[dict]) -> str:
    """Prompts x (model, backend, quantization) accuracy as coloured cells (the latest evaluation per cell)."""
    if not evals:
        return "No evaluations yet: run `gradprompt eval` or `gradprompt compare`."
    cols = sorted({(e["model_id"], e["backend"], e["quantization"], e["split"]) for e in evals})
    prompts = sorted({e["prompt_id"] for e in evals})
    cell = {
        (e["prompt_id"], (e["model_id"], e["backend"], e["quantization"], e["split"])): e["accuracy"] for e in evals
    }
    lines = ["prompt  " + "  ".join(f"{b[:5]} {q[:5]:<5} {s[:4]}" for _, b, q, s in cols)]
    for p in prompts:
        row = []
        for c in cols:
            acc = cell.get((p, c))
            if acc is None:
                row.append(f"{'-':^16}")
            else:
                colour = "green" if acc >= 0.8 else "yellow" if acc >= 0.6 else "red"
                row.append(f"[black on {colour}]{100 * acc:^16.1f}[/]")
        lines.append(f"{p:<6}  " + "  ".join(row))
    return "\n".join(lines)
