"""Does the model already know the test set? A continuation probe for memorized task examples.

Public benchmarks leak into pre-training data, and an evaluation on a split the model has memorized is
optimistic. Memory of this kind shows when the input triggers it ("Schrödinger's memory"), so it can be probed:
each example's text (its input, a newline, its answer) is cut into a prefix (the first half of its tokens) and a
suffix (the next tokens, up to ``max_suffix``). With the prefix given, the model is scored on the true suffix
token by token:

* **recall**: the model's greedy choice is the true next token at every position of the suffix (teacher-forced,
  which is what greedy generation would reproduce), for a suffix of at least ``min_suffix`` tokens;
* **gap**: the true suffix's mean log-probability per token minus that of a **control** - the suffix of another
  example of the same split (a fixed shuffle), scored after the same prefix.

An example is *recalled* when the whole suffix is reproduced, the gap is at least ``min_gap`` nats per token, and the
suffix is the example's own text: a suffix whose token 4-grams mostly (``FORMULAIC_SHARE``) occur in other
examples of the split is *formulaic* (enumerated options, a shared template) and is never counted, since any model
that has read the split's format continues it (Gemma-3-270M "recalled" reasoning_about_colored_objects' option
lists "(D) three (E) four ..." before this rule). A split *looks memorized* when at least ``flag_share`` of the
examples checked (and at least 3) are recalled.

Limits: a negative result does not prove absence (memory may need another trigger: another cut, the benchmark's
own formatting, a few-shot header); a model can know a famous text without having seen the test split; short
examples (fewer than ``2 * min_suffix`` tokens) are not checked. The runtime needs ``encode(text)`` and
``next_logits(tokens)`` (llama.cpp's model has both; tests use a small torch model).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

MIN_SUFFIX = 8
MAX_SUFFIX = 24
MIN_GAP = 1.0  # nats per token
FLAG_SHARE = 0.05
FORMULAIC_SHARE = 0.5  # a suffix with at least this share of its 4-grams found in other examples is formulaic
NGRAM = 4


@dataclass
class Probe:
    example_id: int
    prefix_tokens: int
    suffix_tokens: int
    matched: int  # suffix tokens reproduced before the first miss
    logprob: float  # the true suffix's mean log-probability per token
    control: float  # the control suffix's, after the same prefix
    recalled: bool
    shared: float = 0.0  # the share of the suffix's token 4-grams that occur in other examples of the split

    @property
    def gap(self) -> float:
        return self.logprob - self.control


def example_text(example: dict) -> str:
    return f"{example['input']}\n{example['answer']}"


def _suffix_scores(model, prefix: list[int], suffix: list[int]) -> tuple[list[float], int]:
    """Per-token log-probabilities of ``suffix`` after ``prefix``, and how many of its first tokens are the
    model's greedy choices."""
    import numpy as np

    logprobs, matched, still = [], 0, True
    for i, tok in enumerate(suffix):
        logits = np.asarray(model.next_logits(prefix + suffix[:i]), dtype=np.float64)
        top = logits.max()
        logprobs.append(float(logits[tok] - top - np.log(np.exp(logits - top).sum())))
        if still and int(logits.argmax()) == tok:
            matched += 1
        else:
            still = False
    return logprobs, matched


def probe_examples(
    model,
    examples: Sequence[dict],
    *,
    min_suffix: int = MIN_SUFFIX,
    max_suffix: int = MAX_SUFFIX,
    min_gap: float = MIN_GAP,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[Probe]:
    """The continuation probe of each example long enough to check (see the module's docstring)."""
    cut = []
    for ex in examples:
        ids = list(model.encode(example_text(ex)))
        half = len(ids) // 2
        if half >= min_suffix and len(ids) - half >= min_suffix:
            cut.append((ex, ids[:half], ids[half : half + max_suffix]))
    if len(cut) < 2:
        return []
    seen_in: dict[tuple, int] = {}  # in how many examples each 4-gram occurs
    for _, prefix, suffix in cut:
        for gram in set(_ngrams(prefix + suffix)):
            seen_in[gram] = seen_in.get(gram, 0) + 1
    order = list(range(len(cut)))
    rng = random.Random(seed)
    while True:  # a shuffle with no example paired with itself
        rng.shuffle(order)
        if all(i != j for i, j in enumerate(order)):
            break
    probes = []
    for i, (ex, prefix, suffix) in enumerate(cut):
        logprobs, matched = _suffix_scores(model, prefix, suffix)
        control_suffix = cut[order[i]][2]
        control, _ = _suffix_scores(model, prefix, control_suffix)
        true_mean, control_mean = sum(logprobs) / len(logprobs), sum(control) / len(control)
        own = _ngrams(suffix)
        # a 4-gram of this suffix found in another example occurs in more examples than this one alone
        shared = sum(seen_in.get(g, 0) > 1 for g in own) / len(own) if own else 1.0
        probes.append(
            Probe(
                example_id=int(ex.get("id", i)),
                prefix_tokens=len(prefix),
                suffix_tokens=len(suffix),
                matched=matched,
                logprob=true_mean,
                control=control_mean,
                recalled=matched == len(suffix) and true_mean - control_mean >= min_gap and shared < FORMULAIC_SHARE,
                shared=shared,
            )
        )
        if progress:
            progress(i + 1, len(cut))
    return probes


def _ngrams(ids: Sequence[int]) -> list[tuple[int, ...]]:
    return [tuple(ids[i : i + NGRAM]) for i in range(len(ids) - NGRAM + 1)]


def summarize(probes: Sequence[Probe], n_examples: int, *, flag_share: float = FLAG_SHARE) -> dict:
    recalled = sum(p.recalled for p in probes)
    gaps = sorted(p.gap for p in probes)
    share = recalled / len(probes) if probes else 0.0
    return {
        "examples": n_examples,
        "checked": len(probes),
        "recalled": recalled,
        "share": share,
        "median_gap": gaps[len(gaps) // 2] if gaps else None,
        "mean_matched": (sum(p.matched for p in probes) / len(probes)) if probes else None,
        # reproduced with a gap, but their suffix is the split's shared text, not their own: not counted
        "formulaic": sum(
            p.matched == p.suffix_tokens and p.gap >= MIN_GAP and p.shared >= FORMULAIC_SHARE for p in probes
        ),
        "flagged": bool(probes) and recalled >= 3 and share >= flag_share,
        "thresholds": {
            "min_suffix": MIN_SUFFIX,
            "max_suffix": MAX_SUFFIX,
            "min_gap": MIN_GAP,
            "flag_share": flag_share,
            "formulaic_share": FORMULAIC_SHARE,
        },
    }


def check_task(project, model, task_row: dict, split: str = "test", *, limit: int | None = None, progress=None) -> dict:
    """Probe a task split with a loaded model, store the check in the history and return it (with its id)."""
    examples = project.store.examples(task_row["id"], split, limit=limit)
    probes = probe_examples(model, examples, progress=progress)
    summary = summarize(probes, len(examples))
    record = {
        "project_id": project.id,
        "task_id": task_row["id"],
        "split": split,
        "model_id": model.info.id,
        "model_sha256": getattr(model, "sha256", ""),
        "n": len(probes),
        "recalled": summary["recalled"],
        "flagged": int(summary["flagged"]),
        "summary": summary,
        "rows": [asdict(p) | {"gap": p.gap} for p in probes],
    }
    record["id"] = project.store.add_memorization_check(record)
    return record


def warning_for(store, task_id: int, split: str, model_id: str) -> str | None:
    """A line for an evaluation's report when the newest check of this (task, split, model) looks memorized."""
    checks = store.memorization_checks(task_id, split, model_id)
    if not checks or not checks[0]["flagged"]:
        return None
    s = checks[0]["summary"]
    return (
        f"Warning: the {split} split looks memorized by {model_id}: {s['recalled']} of {s['checked']} examples "
        f"checked were reproduced from their first half (memorization check {checks[0]['id']}). Accuracy on it "
        "is likely optimistic; evaluate on data the model cannot have seen."
    )
