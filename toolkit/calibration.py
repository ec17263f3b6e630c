"""Label calibration: the label decision of a prompt, corrected for the model's bias towards some labels.

A small model often answers one label for almost every input (SmolLM2-135M said "Business" to every news item;
Gemma-3-270M said "negative" to 95 of 100 reviews). Calibration keeps the prompt and shifts each label's score
by a constant before the argmax, estimated from the model's own answers:

* **batch** (Zhou et al., "Batch Calibration", ICLR 2024): the label prior is the mean, over a batch of real
  inputs, of the model's label probabilities; each label's log-score is lowered by the log of its prior. No
  gold answers are used, only inputs.
* **contextual** (Zhao et al., "Calibrate Before Use", ICML 2021): the prior is the mean label probability on
  content-free inputs ("N/A", "", "[MASK]") put where the input goes.

Both are fitted on the task's *training* rows only (the dev rows decide whether to keep it, the test rows
measure it) and stored with the prompt version: every evaluation of that version uses it, and exports carry it
as a ``logit_bias`` on the labels' first tokens (exact when those differ; marked approximate when they do not,
where gradprompt compares whole-label log-probabilities).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from .errors import ConfigError

if TYPE_CHECKING:  # evaluate imports this module; these are for the annotations only
    from .evaluate import EvalSettings
    from .layout import ChatLayout
    from .tasks import AnswerSpec

METHODS = ("none", "contextual", "batch")
CONTENT_FREE = ("N/A", "", "[MASK]")
# Training rows a calibration is fitted on by default (all of them up to this many): the size issue 26 reported
# its news-topic check with, and what Bench 8 used; each row costs one forward pass with llama.cpp.
DEFAULT_ROWS = 32


def argmax(scores: Sequence[float]) -> int:
    """The label rule's choice among scores: the highest, the first on a tie (torch's argmax does the same)."""
    return max(range(len(scores)), key=lambda i: scores[i])


def softmax(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


@dataclass(frozen=True)
class Calibration:
    """A per-label shift of the label scores (log space), added before the argmax."""

    method: str  # "batch" | "contextual"
    labels: tuple[str, ...]
    bias: tuple[float, ...]
    n: int  # inputs it was fitted on
    split: str = "train"  # where those inputs came from ("content-free" for contextual)

    def __post_init__(self):
        if self.method not in METHODS[1:]:
            raise ConfigError(f"Unknown calibration {self.method!r}: use {', '.join(METHODS)}.")
        if len(self.labels) != len(self.bias):
            raise ConfigError("A calibration needs one bias per label.")

    def choose(self, scores: Sequence[float]) -> int:
        """The index of the label chosen from raw label ``scores`` (first-token logits or log-probabilities)."""
        return argmax([s + b for s, b in zip(scores, self.bias)])

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "labels": list(self.labels),
            "bias": [round(b, 6) for b in self.bias],
            "n": self.n,
            "split": self.split,
        }

    def to_json(self) -> str:
        """The stored form (also its identity: part of the prompt version and of every cache key)."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | dict | None) -> "Calibration | None":
        if text in (None, ""):
            return None
        data = json.loads(text) if isinstance(text, str) else text
        return cls(
            method=data["method"],
            labels=tuple(data["labels"]),
            bias=tuple(float(b) for b in data["bias"]),
            n=int(data.get("n", 0)),
            split=data.get("split", "train"),
        )

    def describe(self) -> str:
        where = "content-free inputs" if self.method == "contextual" else f"{self.n} {self.split} rows"
        shifts = ", ".join(f"{label} {b:+.2f}" for label, b in zip(self.labels, self.bias))
        return f"{self.method} calibration ({where}): {shifts}"

    def for_labels(self, labels: Sequence[str]) -> "Calibration":
        """This calibration, checked against a task's labels (a task re-imported with other labels refuses)."""
        if tuple(labels) != self.labels:
            raise ConfigError(
                f"The prompt's calibration is for the labels {', '.join(self.labels)}, but the task's labels are "
                f"{', '.join(labels)}. Calibrate the prompt again: `gradprompt eval ID --calibrate batch`."
            )
        return self


def fit(
    method: str, score_rows: Sequence[Sequence[float]], labels: Sequence[str], *, split: str = "train"
) -> Calibration:
    """A calibration from label scores (one row of raw label scores per input): each label's bias is minus the
    log of its mean probability over the rows, centred to mean zero (only differences matter)."""
    if method not in METHODS[1:]:
        raise ConfigError(f"Unknown calibration {method!r}: use {', '.join(METHODS)}.")
    if not score_rows:
        raise ConfigError(
            "Calibration needs training rows: this task has none. Import it with a train split "
            "(`gradprompt tasks import FILE --split ...`)."
        )
    k = len(labels)
    mean = [0.0] * k
    for row in score_rows:
        for i, p in enumerate(softmax(row)):
            mean[i] += p / len(score_rows)
    raw = [-math.log(max(m, 1e-12)) for m in mean]
    centre = sum(raw) / k
    return Calibration(
        method=method,
        labels=tuple(labels),
        bias=tuple(b - centre for b in raw),
        n=len(score_rows),
        split="content-free" if method == "contextual" else split,
    )


def check_label_task(spec, what: str = "Calibration") -> None:
    if spec.kind != "label" or len(spec.labels) < 2:
        raise ConfigError(
            f"{what} applies to label tasks (two or more labels); this task's answers are {spec.kind}s. "
            "Leave out --calibrate."
        )


def label_scores_for(
    model, layout: ChatLayout, spec: AnswerSpec, prompt: str, input_text: str, settings: EvalSettings
) -> list[float]:
    """The raw label scores :func:`toolkit.evaluate.choose_label` compares for one input (what a calibration is
    fitted on)."""
    from .evaluate import _answer_tokens, _label_raw_scores

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
    from .evaluate import EvalSettings, prompt_layout

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


def row_decision(row: dict) -> str | None:
    """A prompt row's label decision in words ("batch calibration (32 train rows): ..."), None when it has none."""
    cal = Calibration.from_json(row.get("calibration"))
    return cal.describe() if cal is not None else None
