"""What every evaluation shares, and llama.cpp's answer rules.

* The settings and the report, the cache key of an example's answer, and the loop that stores each answer as it
  is done and continues a stopped evaluation (:func:`run_evaluation`). The service that runs a prompt version
  on a split with a runtime is :func:`toolkit.evaluation.evaluate_prompt`.
* llama.cpp's answers: labels by greedy decoding restricted to the task's labels (see :func:`choose_label`; the
  optimizer's rule); numbers and free text by greedy generation under a GBNF grammar (a number; one line).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .calibration import Calibration, argmax
from .layout import CHAIN_CAP, REASONING_SEPARATOR, ChatLayout, answer_text
from .stats import wilson_interval
from .tasks import AnswerSpec, answer_from_text, is_correct


@dataclass(frozen=True)
class EvalSettings:
    mode: str = "direct"  # direct | reasoning
    max_new_tokens: int = CHAIN_CAP  # reasoning chain cap
    answer_tokens: int = 16  # cap for number / free-text answers
    # An inference-time strategy around the prompt (see :mod:`toolkit.strategies`): "plain", "second-attempt",
    # "logic-of-thought" or "combine", with what its results depend on (JSON text, e.g. the correction prompt).
    strategy: str = "plain"
    strategy_args: str = ""

    def key(self) -> str:
        """What the results depend on (the chain cap only matters when there is a chain)."""
        data: dict = {"mode": self.mode, "answer_tokens": self.answer_tokens}
        if self.mode == "reasoning":
            data["max_new_tokens"] = self.max_new_tokens
        if self.strategy != "plain":  # plain keys stay what they were: the cache of earlier versions holds
            data["strategy"] = self.strategy
            data["strategy_args"] = self.strategy_args
        return json.dumps(data, sort_keys=True)

    @property
    def label(self) -> str:
        """The evaluation's mode as stored and listed: "direct", or "direct+second-attempt" with a strategy."""
        return self.mode if self.strategy == "plain" else f"{self.mode}+{self.strategy}"


@dataclass
class EvalReport:
    evaluation_id: int | None
    prompt: str
    n: int
    correct: int
    accuracy: float
    ci: tuple[float, float]
    confusion: dict = field(default_factory=dict)
    seconds: float = 0.0
    cached: int = 0
    model_calls: int = 0
    skipped: int = 0  # examples that did not fit the model's context (counted wrong; their output says why)


# The stored output of an example that could not be evaluated (it is counted wrong).
SKIPPED = "[skipped] "


def predict(
    model,
    layout: ChatLayout,
    spec: AnswerSpec,
    prompt: str,
    input_text: str,
    settings: EvalSettings,
    calibration: Calibration | None = None,
) -> tuple[str, str | None]:
    """(model output text, predicted answer) for one example on a llama.cpp model."""
    chain, text, predicted = answer_after(model, spec, layout.render(input_text, prompt), settings, calibration)
    return (chain + " " + text).strip(), predicted


def _answer_tokens(model, spec: AnswerSpec, text: str, settings: EvalSettings) -> tuple[str, list[int]]:
    """(reasoning chain, tokens up to the answer) after ``text``: in reasoning mode a greedy chain first."""
    chain = ""
    if settings.mode == "reasoning":
        chain = model.decode(model.generate(model.encode(text), settings.max_new_tokens))
        text = text + chain + REASONING_SEPARATOR
    return chain, model.encode(text + spec.extractor)


def answer_after(
    model, spec: AnswerSpec, text: str, settings: EvalSettings, calibration: Calibration | None = None
) -> tuple[str, str, str | None]:
    """(reasoning chain, answer text, predicted answer) after ``text`` (rendered up to the assistant header): in
    reasoning mode a greedy chain first, then the extractor and the answer.

    Every step tokenizes the whole text so far, as a server that receives the text does (llama.cpp's
    ``/completion``, an OpenAI-style ``/v1/completions``): tokenizing the parts one by one gives different
    tokens where they meet (SmolLM2: ``'\\n\\n'`` before the prompt, where the whole text has ``'\\n', '\\n'``),
    and those change answers. The KV cache keeps the shared prefix, so re-tokenizing costs nothing."""
    chain, tokens = _answer_tokens(model, spec, text, settings)
    if spec.kind == "label":
        predicted = choose_label(model, tokens, spec.labels, calibration)
        return chain, predicted, predicted
    answer = model.decode(model.generate_constrained(tokens, answer_grammar(spec), settings.answer_tokens)).strip()
    return chain, answer, answer_from_text(answer, spec.kind)


def choose_label(model, tokens: list[int], labels: Sequence[str], calibration: Calibration | None = None) -> str:
    """The label the model prefers after ``tokens``: greedy decoding restricted to the labels' own tokens.

    When the labels' first tokens differ this is the label whose first token has the highest logit (one
    forward pass; the optimizer uses the same rule). Otherwise whole-label log-probabilities are compared.
    A character-level grammar is not used for labels: it lets the model spell " positive" as " " + "positive"
    (a tokenization it never saw in training), which changes the answer (seen on SmolLM2: 19 of 30 differed).
    """
    raw = _label_raw_scores(model, tokens, labels)
    if calibration is not None:  # each label's score shifted by its bias (toolkit.calibration)
        return labels[calibration.choose([float(x) for x in raw])]
    return labels[argmax([float(x) for x in raw])]


def label_scores(model, tokens: list[int], labels: Sequence[str]) -> list[float]:
    """Each label's log-probability after ``tokens``, normalized over the labels (the scores
    :func:`choose_label` compares: first-token logits when the first tokens differ, else whole labels)."""
    raw = [float(x) for x in _label_raw_scores(model, tokens, labels)]
    top = max(raw)
    norm = top + math.log(sum(math.exp(x - top) for x in raw))
    return [x - norm for x in raw]


def _label_raw_scores(model, tokens: list[int], labels: Sequence[str]) -> list:
    label_ids = [model.encode(answer_text(label)) for label in labels]
    firsts = [ids[0] for ids in label_ids]
    if len(set(firsts)) == len(firsts):
        logits = model.next_logits(tokens)
        return [logits[f] for f in firsts]
    return [_sequence_logprob(model, tokens, ids) for ids in label_ids]


def _sequence_logprob(model, tokens: list[int], label: list[int]) -> float:
    import numpy as np

    total = 0.0
    for i, tok in enumerate(label):
        logits = model.next_logits(tokens + label[:i]).astype("float64")
        m = logits.max()
        total += float(logits[tok] - m - np.log(np.exp(logits - m).sum()))
    return total


def answer_grammar(spec: AnswerSpec) -> str:
    """A llama.cpp GBNF grammar for the answer that follows the extractor (a space, then the answer)."""
    if spec.kind == "label":  # for exports; gradprompt itself scores labels with choose_label()
        alternatives = " | ".join(json.dumps(label) for label in spec.labels)
        return f'root ::= " " ( {alternatives} )'
    if spec.kind == "number":
        return 'root ::= " " "-"? [0-9] [0-9,]* ( "." [0-9]+ )? "."?'
    return 'root ::= " " [^\n]+'


# How an example becomes tokens (part of every cache key: results of another tokenization are not reused).
# "whole-text": the rendered text is tokenized in one piece, as a server does (before 2026-12-06 the input, the
# prompt and the end of turn were tokenized one by one).
TOKENIZATION = "whole-text"


def cache_key(
    prompt: str,
    model_sha: str,
    settings: EvalSettings,
    spec: AnswerSpec,
    example: dict,
    calibration: Calibration | None = None,
    demos: str | None = None,
) -> str:
    parts = [
        prompt,
        model_sha,
        settings.key(),
        spec.kind,
        list(spec.labels),
        spec.extractor,
        example["input"],
        example["answer"],
        TOKENIZATION,
    ]
    if spec.kind != "label":  # generated answers depend on the answer grammar: a new grammar, new results
        parts.append(answer_grammar(spec))
    if calibration is not None:  # uncalibrated keys stay what they were
        parts.append(calibration.to_json())
    if demos:  # the stored JSON of the demonstrations (toolkit.layout.demos_to_json)
        parts.append(["demos", demos])
    raw = json.dumps(parts)
    return hashlib.sha256(raw.encode()).hexdigest()


def template_key(model) -> str:
    """The part of a cache key that tells chat templates apart: empty for a model that renders the template its
    weights carry (the weights' hash already names it), else a hash of the template it renders instead."""
    info = getattr(model, "info", None)
    if info is None or getattr(info, "chat_template", "gguf") == "gguf":
        return ""
    return ":template:" + hashlib.sha256((model.chat_template or "").encode()).hexdigest()[:16]


@contextlib.contextmanager
def interrupted_marks(store, evaluation_id: int):
    """An evaluation left by Ctrl-C is marked ``stopped``, one left by an error ``failed``; its finished
    examples stay in the cache, so running it again continues from there."""
    try:
        yield
    except BaseException as exc:
        try:
            store.finish_evaluation(evaluation_id, status="stopped" if isinstance(exc, KeyboardInterrupt) else "failed")
        except Exception:  # e.g. the disk is full: it then reads interrupted (its process is gone)
            pass
        raise


def add_to_confusion(confusion: dict[str, dict[str, int]], gold: str, predicted: str | None) -> None:
    row = confusion.setdefault(gold, {})
    row[str(predicted)] = row.get(str(predicted), 0) + 1


def run_evaluation(
    store,
    evaluation_id: int,
    *,
    prompt_text: str,
    spec: AnswerSpec,
    keyed: Sequence[tuple],
    predict_batch: Callable[[list[dict]], list[tuple[str, str | None]]],
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
    execute: Callable[[list[list[dict]], Callable[[int, list, float], None]], None] | None = None,
) -> EvalReport:
    """The evaluation loop both runtimes share. ``keyed`` is [(example, cache key)]; cached examples are
    taken from the history, the rest go to ``predict_batch`` (-> [(output, predicted)]) ``batch_size`` at a
    time, and each batch is stored as soon as it is done, so a stopped or interrupted evaluation continues
    from there. A ``stop`` event ends it after the current batch (status ``stopped``). ``execute(parts,
    deliver)`` predicts the parts elsewhere (``--ray``: toolkit.cluster) instead of ``predict_batch``, calling
    ``deliver(part index, outputs, seconds per example)`` as each part finishes."""
    t_start = time.perf_counter()
    correct = cached = calls = done = 0
    confusion: dict[str, dict[str, int]] = {}

    skipped = 0

    def record(ex: dict, key: str, output: str, predicted: str | None, ok: bool, seconds: float) -> None:
        nonlocal correct, done, skipped
        store.add_result(evaluation_id, ex["id"], key, output, predicted, ok, seconds)
        correct += int(ok)
        done += 1
        skipped += output.startswith(SKIPPED)
        if spec.kind == "label":
            add_to_confusion(confusion, ex["answer"], predicted)
        if progress:
            progress(done, len(keyed))

    with interrupted_marks(store, evaluation_id):
        todo = []
        for ex, key in keyed:
            hit = store.cached_result(key)
            if hit is None:
                todo.append((ex, key))
            else:
                cached += 1
                record(ex, key, hit["output"], hit["predicted"], bool(hit["correct"]), 0.0)
        size = max(1, batch_size)
        parts = [todo[start : start + size] for start in range(0, len(todo), size)]

        def deliver(part: list[tuple], outputs: list[tuple[str, str | None]], per: float) -> None:
            nonlocal calls
            calls += len(part)
            for (ex, key), (output, predicted) in zip(part, outputs):
                record(ex, key, output, predicted, is_correct(predicted, ex["answer"], spec.kind), per)

        if execute is not None:  # elsewhere (a Ray cluster): each part delivered as it finishes
            execute([[ex for ex, _ in part] for part in parts], lambda i, outputs, per: deliver(parts[i], outputs, per))
        else:
            for part in parts:
                if stop is not None and stop.is_set():
                    break
                t0 = time.perf_counter()
                outputs = predict_batch([ex for ex, _ in part])
                deliver(part, outputs, (time.perf_counter() - t0) / len(part))
        stopped = stop is not None and stop.is_set() and done < len(keyed)
    seconds = time.perf_counter() - t_start
    accuracy = correct / done if done else 0.0
    lo, hi = wilson_interval(correct, done)
    timings = {"seconds": seconds, "cached": cached, "model_calls": calls, "skipped": skipped}
    if stopped:
        store.finish_evaluation(evaluation_id, status="stopped", timings=timings)
    else:
        store.finish_evaluation(
            evaluation_id, n=done, correct=correct, accuracy=accuracy, ci_low=lo, ci_high=hi, timings=timings
        )
    return EvalReport(
        evaluation_id, prompt_text, done, correct, accuracy, (lo, hi), confusion, seconds, cached, calls, skipped
    )


def prompt_layout(model, spec: AnswerSpec, prompt_row: dict | None = None) -> ChatLayout:
    """The layout of a model's chat, with the prompt version's demonstrations (if any) as earlier turns."""
    from .layout import demos_from_json

    layout = ChatLayout(model.chat_template, model.bos_token, model.eos_token)
    demos = demos_from_json(prompt_row.get("demos")) if prompt_row else ()
    return layout.with_demos(demos, spec.extractor) if demos else layout


def prompt_calibration(prompt_row: dict, spec: AnswerSpec) -> Calibration | None:
    """The calibration stored with a prompt version (None: plain argmax), checked against the task's labels."""
    cal = Calibration.from_json(prompt_row.get("calibration"))
    return cal.for_labels(spec.labels) if cal is not None else None


def check_answer_format(model, spec: AnswerSpec, examples: Sequence[dict], prompt: str, settings: EvalSettings) -> dict:
    """Run ``prompt`` on a few examples with llama.cpp before a long run and say what looks wrong with the
    answer format: the exact text the model sees (first example), each answer, and warnings (see
    :func:`format_warnings`). Nothing is stored."""
    layout = ChatLayout(model.chat_template, model.bos_token, model.eos_token)
    before, after = layout.split(examples[0]["input"] if examples else "")
    chain = "[the model's reasoning]" + REASONING_SEPARATOR if settings.mode == "reasoning" else ""
    rows = []
    for ex in examples:
        output, predicted = predict(model, layout, spec, prompt, ex["input"], settings)
        rows.append(
            {
                "input": ex["input"],
                "answer": ex["answer"],
                "output": output,
                "predicted": predicted,
                "correct": is_correct(predicted, ex["answer"], spec.kind),
            }
        )
    n = len(rows)
    return {
        "seen": before + prompt + after + chain + spec.extractor,
        "rows": rows,
        "accuracy": (sum(r["correct"] for r in rows) / n) if n else 0.0,
        "warnings": format_warnings(spec, rows),
    }


def format_warnings(spec: AnswerSpec, rows: Sequence[dict]) -> list[str]:
    """What a few answers say about the answer format: nothing parsed, one label for everything, none right."""
    warnings: list[str] = []
    n = len(rows)
    if not n:
        return warnings
    unparsed = sum(r["predicted"] is None for r in rows)
    if unparsed:
        warnings.append(
            f"{unparsed}/{n} answers could not be read as a {spec.kind}: check the extractor "
            f"({spec.extractor!r}) or the answer kind."
        )
    golds = sorted({r["answer"] for r in rows})
    if spec.kind == "label" and n >= 4 and len({str(r["predicted"]) for r in rows}) == 1 and len(golds) > 1:
        warnings.append(
            f"The model answered {rows[0]['predicted']!r} for all {n} examples: the prompt and "
            "extractor do not steer it yet (optimization can fix that, but check the labels first)."
        )
    if n >= 4 and not any(r["correct"] for r in rows):
        warnings.append(
            f"None of the {n} is right. If the gold answers ({', '.join(golds[:5])}) are what the "
            "extractor asks for, the model is just weak here: expect a low starting accuracy."
        )
    return warnings
