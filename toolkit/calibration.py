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

This module is the decision rule alone (evaluate applies it); fitting one with a model is
:mod:`toolkit.calibrate`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ConfigError

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
    def from_json(cls, text: str | dict | None) -> Calibration | None:
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

    def for_labels(self, labels: Sequence[str]) -> Calibration:
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


def row_decision(row: dict) -> str | None:
    """A prompt row's label decision in words ("batch calibration (32 train rows): ..."), None when it has none."""
    cal = Calibration.from_json(row.get("calibration"))
    return cal.describe() if cal is not None else None
