"""Fitting a label calibration with llama.cpp and keeping it as a prompt version (the rule itself is
:mod:`toolkit.calibration`, which the evaluator applies; this module scores with the evaluator, above it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .calibration import CONTENT_FREE, DEFAULT_ROWS, METHODS, Calibration, check_label_task, fit
from .errors import ConfigError
from .evaluate import EvalSettings, _answer_tokens, _label_raw_scores, prompt_layout
from .layout import ChatLayout
from .tasks import AnswerSpec


def label_scores_for(
    model, layout: ChatLayout, spec: AnswerSpec, prompt: str, input_text: str, settings: EvalSettings
) -> list[float]:
    """The raw label scores :func:`toolkit.evaluate.choose_label` compares for one input (what a calibration is
    fitted on)."""
    _, tokens = _answer_tokens(model, spec, layout.render(input_text, prompt), settings)
    return [float(x) for x in _label_raw_scores(model, tokens, spec.labels)]


def fit_calibration(
    model,
    layout: ChatLayout,
    spec: AnswerSpec,
    prompt: str,
    method: str,
    train_inputs: Sequence[str],
    settings: EvalSettings,
    progress: Callable[[int, int], None] | None = None,
) -> Calibration:
    """Fit a calibration of ``prompt`` with llama.cpp: on ``train_inputs`` (batch; rows of the training split
    only, the caller's duty) or on the content-free inputs (contextual)."""
    check_label_task(spec)
    inputs = list(CONTENT_FREE) if method == "contextual" else list(train_inputs)
    rows = []
    for i, text in enumerate(inputs):
        rows.append(label_scores_for(model, layout, spec, prompt, text, settings))
        if progress:
            progress(i + 1, len(inputs))
    return fit(method, rows, spec.labels)


def calibrated_version(
    project,
    model,
    task_row: dict,
    prompt_row: dict,
    method: str,
    *,
    rows: int = DEFAULT_ROWS,
    settings=None,
    progress=None,
) -> dict:
    """The prompt version of ``prompt_row``'s text with a ``method`` calibration fitted with llama.cpp on the
    first ``rows`` rows of the task's training split (never dev or test), found in the library or added to it
    (origin ``calibrated``, parent: the prompt it was fitted for). ``method`` "none": the uncalibrated version."""
    store = project.store
    if method not in METHODS:
        raise ConfigError(f"Unknown calibration {method!r}: use {', '.join(METHODS)}.")
    if method == "none":
        if not prompt_row.get("calibration"):
            return prompt_row
        demos = prompt_row.get("demos")
        plain = store.find_prompt(project.id, task_row["id"], prompt_row["text"], None, demos)
        if plain is not None:
            return plain
        return store.prompt(
            project.add_prompt(task_row, prompt_row["text"], origin="user", parent_id=prompt_row["id"], demos=demos)
        )
    spec = store.task_spec(task_row)
    check_label_task(spec)
    if rows < 1:
        raise ConfigError(f"--calibrate-rows must be 1 or more (it is {rows}).")
    train = [e["input"] for e in store.examples(task_row["id"], "train", limit=rows)]
    layout = prompt_layout(model, spec, prompt_row)
    cal = fit_calibration(
        model, layout, spec, prompt_row["text"], method, train, settings or EvalSettings(), progress=progress
    )
    text = cal.to_json()
    existing = store.find_prompt(project.id, task_row["id"], prompt_row["text"], text, prompt_row.get("demos"))
    if existing is not None:
        return existing
    parent = prompt_row["id"]
    pid = project.add_prompt(
        task_row,
        prompt_row["text"],
        origin="calibrated",
        parent_id=parent,
        calibration=text,
        demos=prompt_row.get("demos"),
        note=f"{cal.describe()}; fitted on the model {model.info.id}",
    )
    return store.prompt(pid)
