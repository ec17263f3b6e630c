"""The TUI's forms read into the core's settings, with the CLI's defaults (import, new run)."""

from __future__ import annotations

from toolkit.layout import CHAIN_CAP

from .dialogs import seconds, whole


def run_config_from_form(values: dict):
    """The new-run dialog's values -> ("greater", GreaterConfig) or ("baseline", BaselineConfig), with the
    defaults of `gradprompt optimize` (toolkit/defaults.py; chain cap 64, dev at the end)."""
    from toolkit.optimize import is_greater

    method = (values.get("method") or "greater").strip()
    steps = whole(values, "steps", "Steps", minimum=1)
    n_train = whole(values, "train", "Training examples", minimum=1)
    n_dev = whole(values, "dev", "Dev examples", minimum=1)
    seed = whole(values, "seed", "Seed", 0)
    budget = seconds(values, "budget", "Time budget")
    if not is_greater(method):
        from toolkit.baselines import BaselineConfig

        return "baseline", BaselineConfig.for_run(
            method, budget_s=budget, max_steps=steps, n_train=n_train, n_dev=n_dev, seed=seed
        )
    from toolkit.engine.greater import GreaterConfig

    return "greater", GreaterConfig(
        mode=(values.get("mode") or "direct").strip(),
        steps=steps,
        n_train=n_train,
        n_dev=n_dev,
        seed=seed,
        max_new_tokens=whole(values, "chain_cap", "Reasoning chain cap", CHAIN_CAP, 1),
        dev_every=whole(values, "dev_every", "Dev score every N steps", 0, 0),
        time_budget_s=budget,
    )


IMPORT_FIELDS = [  # the CLI's `tasks import` options, with its defaults
    ("path", "File (train, or all)", ""),
    ("name", "Name (optional)", ""),
    ("dev_file", "Dev file (optional)", ""),
    ("test_file", "Test file (optional)", ""),
    ("format", "Format", "auto", ["auto", "csv", "tsv", "jsonl", "json"]),
    ("input_column", "Input column (optional)", ""),
    ("target_column", "Answer column (optional)", ""),
    ("input_template", "Input template (optional)", ""),
    ("answer_regex", "Answer regex (optional)", ""),
    ("answer_type", "Answer type", "auto", ["auto", "label", "number", "text"]),
    ("max_labels", "Most distinct labels", "20"),
    ("split", "Split train,dev,test", "0.4,0.2,0.4"),
    ("seed", "Split seed", "0"),
]


def read_task_file_from_form(values: dict):
    """The import dialog's values -> a parsed task (the same options and defaults as `gradprompt tasks import`)."""
    from toolkit.tasks import ImportOptions, parse_split, read_task_file

    def text(key: str) -> str | None:
        return (values.get(key) or "").strip() or None

    choice = {k: None if (values.get(k) or "auto") == "auto" else values[k] for k in ("format", "answer_type")}
    opts = ImportOptions(
        input_column=text("input_column"),
        target_column=text("target_column"),
        input_template=text("input_template"),
        answer_regex=text("answer_regex"),
        answer_kind=choice["answer_type"],
        format=choice["format"],
        max_labels=whole(values, "max_labels", "Most distinct labels", 20, 2),
        split=parse_split(text("split") or "0.4,0.2,0.4"),
        seed=whole(values, "seed", "Split seed", 0),
    )
    return read_task_file(
        values["path"].strip(), name=text("name"), options=opts, dev_file=text("dev_file"), test_file=text("test_file")
    )
