"""Rendering shared by the CLI, the demo and anything else that prints progress (the core never imports the CLI).

User text (prompts, tokens, events) is escaped before it goes into Rich markup: a prompt or input holding
``[...]`` is printed as written.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


class StepPrinter:
    def __init__(self, total: int, out: Console | None = None, budget_s: float | None = None):
        self.total = total
        self.out = out or Console()
        self.budget_s = budget_s
        self.t0 = time.perf_counter()
        self.first = None

    def __call__(self, record: dict) -> None:
        done = record["step"] + 1
        if self.first is None:
            self.first = record["step"]  # a resumed run starts later
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(1, done - self.first) * (self.total - done)
        if self.budget_s is not None:
            eta = min(eta, max(0.0, self.budget_s - elapsed))
        search = record.get("search") or {}
        kind = search.get("kind", "single")
        if record["accepted"]:
            mark = "[green]changed[/]" if kind != "grow" else "[green]grew[/]"
            what = record["chosen_token"] if kind == "pair" else repr(record["chosen_token"])
        elif kind == "grow":
            mark, what = "[dim]no growth[/]", ""
        elif kind == "pair":
            mark, what = "[dim]no pair helped[/]", ""
        else:
            mark, what = "[dim]kept[/]", repr(record["chosen_token"])
        where = "pairs " if kind == "pair" else f"pos {record['position']:>2}"
        self.out.print(
            f"step {done:>3}/{self.total}  {where}  train acc {_pct(record['train_accuracy'])}  "
            + (
                f"balanced {_pct(search['train_balanced_accuracy'])}  "
                if search.get("train_balanced_accuracy") is not None
                else ""
            )
            + (f"dev acc {_pct(record['dev_accuracy'])}  " if record.get("dev_accuracy") is not None else "")
            + f"score {record['train_score']:.3f}  {mark} {escape(what):<14} "
            f"[dim]{elapsed:5.0f}s elapsed, ~{eta:4.0f}s left[/]",
            highlight=False,
        )
        if search:
            agree = search.get("agreement")
            self.out.print(
                f"        [dim]scored {search.get('scored', 0)} of {search.get('pool', 0)} candidates "
                f"({search.get('probe', 0)} random probe), {search.get('better', 0)} better than the current prompt"
                + (f"; gradient rank agreement {agree:+.2f}" if agree is not None else "")
                + (f"; prompt NLL {record['train_nll']:.2f}" if record.get("train_nll") is not None else "")
                + "[/]",
                highlight=False,
            )
        self.out.print(f"        [cyan]{escape(record['prompt_after'])}[/]", highlight=False)
        for event in record.get("events", []):
            self.out.print(f"        [yellow]{escape(event)}[/]")
        if search.get("stop_reason"):
            self.out.print(f"        [yellow]Stopping early: {escape(search['stop_reason'])}.[/]")


def eval_progress(status, label: str):
    """A progress callback for evaluate_prompt that updates a rich status line: done/total and examples/s."""
    t_start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        rate = done / max(1e-9, time.perf_counter() - t_start)
        status.update(f"{label}: {done}/{total} examples ({rate:.1f}/s)")

    return progress


def _print_eval(label: str, report, out: Console | None = None) -> None:
    lo, hi = report.ci
    (out or Console()).print(
        f"{label}: accuracy [bold]{_pct(report.accuracy)}[/] ({report.correct}/{report.n}), "
        f"95% CI {_pct(lo)}-{_pct(hi)}  [dim]{report.seconds:.1f}s, {report.cached} cached[/]"
    )
    if getattr(report, "skipped", 0):
        (out or Console()).print(
            f"[yellow]{report.skipped} example(s) did not fit the model's context and were "
            "counted wrong[/] (`gradprompt evals show` lists them as \\[skipped]).",
            highlight=False,
        )
