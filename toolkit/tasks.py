"""Tasks: named example sets with an answer spec, read from CSV, TSV, JSONL or JSON.

Reading is pure (no database): :func:`read_task_file` parses and validates a whole file and returns a
:class:`TaskData`, or raises :class:`~toolkit.errors.DatasetError` naming the file, row and column.
Nothing is written until the data is valid, and the store writes it in one transaction.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
import warnings as _warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from .errors import DatasetError
from .readers import read_rows  # noqa: F401  (file reading; importable from here as before)

AnswerKind = Literal["label", "number", "text"]
SPLITS = ("train", "dev", "test")

INPUT_COLUMNS = ("input", "goal", "question", "text", "sentence", "prompt", "query")
TARGET_COLUMNS = ("final_target", "answer", "target", "label", "output", "completion")
MAX_LABELS_DEFAULT = 20
_NUMBER_RE = re.compile(r"^[-+]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?$")
LONG_INPUT_CHARS = 14_000
_PAREN_LABEL_RE = re.compile(r"^\(([A-Za-z0-9]{1,3})\)$")


@dataclass(frozen=True)
class AnswerSpec:
    """What a correct answer looks like, and the text that asks the model for it."""

    kind: AnswerKind
    labels: tuple[str, ...] = ()
    extractor: str = ""

    def __post_init__(self):
        if self.kind not in ("label", "number", "text"):
            raise DatasetError(f"Unknown answer type {self.kind!r}: use label, number or text.")
        if self.kind == "label" and len(self.labels) < 2:
            raise DatasetError("A label task needs at least two distinct labels in the data.")
        if not self.extractor:
            object.__setattr__(self, "extractor", default_extractor(self.kind, self.labels))

    def is_correct(self, predicted: str | None, gold: str) -> bool:
        return is_correct(predicted, gold, self.kind)


def is_correct(predicted: str | None, gold: str, kind: AnswerKind) -> bool:
    """The one answer rule both runtimes, the optimizer and every report use: the normalized answers are equal
    (nothing parsed is wrong)."""
    return predicted is not None and normalize_answer(predicted, kind) == normalize_answer(gold, kind)


# The same answer shapes as :func:`toolkit.evaluate.answer_grammar`, as text checks, for runtimes without GBNF (torch).
# A number may end with a full stop ("10."): small models end the sentence there, and without it a grammar
# that demands digits after "." turns "10." into "10.1010".
_NUMBER_PREFIX = re.compile(r" (-?([0-9][0-9,]*(\.([0-9]+\.?)?)?)?)?")
_NUMBER_DONE = re.compile(r" -?[0-9][0-9,]*(\.[0-9]+)?\.?")


def answer_prefix_ok(text: str, kind: str) -> bool:
    """Whether ``text`` can still grow into an answer the grammar accepts (the empty text can)."""
    if not text:
        return True
    if kind == "number":
        return _NUMBER_PREFIX.fullmatch(text) is not None
    return text.startswith(" ") and "\n" not in text


def answer_complete(text: str, kind: str) -> bool:
    """Whether the grammar accepts ``text`` as a whole answer (where generation may end)."""
    if kind == "number":
        return _NUMBER_DONE.fullmatch(text) is not None
    return len(text) >= 2 and answer_prefix_ok(text, kind)


def answer_from_text(text: str, kind: str) -> str | None:
    """The predicted answer in a generated answer text (None: no number where one was asked for)."""
    text = text.strip()
    if kind == "number":
        return text.rstrip(".") if parse_number(text) is not None else None
    if kind == "text":  # the words themselves: quotes and a final full stop are the model's punctuation
        return text.strip(" .\"'")
    return text


def default_extractor(kind: AnswerKind, labels: Sequence[str] = ()) -> str:
    """The text placed after the model's reasoning (or straight after the prompt) to ask for the answer."""
    if kind == "label":
        return f"Therefore, the final answer (one of: {', '.join(labels)}) is"
    if kind == "number":
        return "Therefore, the final answer (a number) is"
    return "Therefore, the final answer is"


def normalize_answer(text: str, kind: AnswerKind) -> str:
    text = text.strip()
    if kind == "number":
        num = parse_number(text)
        if num is None:
            return text.lower()
        return repr(float(num))
    text = text.strip(" .\"'").lower()
    return re.sub(r"\s+", " ", text)


def parse_number(text: str) -> float | None:
    """The first number in ``text`` (commas as thousands separators), or None."""
    match = re.search(r"[-+]?\d[\d,]*(\.\d+)?|[-+]?\.\d+", text)
    if not match:
        return None
    try:
        return float(match.group(0).replace(",", ""))
    except ValueError:
        return None


@dataclass(frozen=True)
class Example:
    input: str
    answer: str
    target: str = ""
    split: str = "train"
    source_row: int = 0


@dataclass(frozen=True)
class TaskData:
    """A parsed, validated task, ready to be stored."""

    name: str
    examples: tuple[Example, ...]
    spec: AnswerSpec
    source: str = ""
    options: dict = field(default_factory=dict)

    def split(self, name: str) -> list[Example]:
        return [ex for ex in self.examples if ex.split == name]

    def split_sizes(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in SPLITS}

    def label_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ex in self.examples:
            counts[ex.answer] = counts.get(ex.answer, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def parse_split(text: str) -> tuple[float, float, float]:
    """'0.4,0.2,0.4' -> (0.4, 0.2, 0.4): the train, dev and test fractions of an import."""
    try:
        fractions = tuple(float(x) for x in str(text).split(","))
        if len(fractions) != 3 or any(not (0 <= f < float("inf")) for f in fractions):
            raise ValueError
        if not (0 < sum(fractions) < 1e6):  # shares of a whole (1e308 three times would overflow to inf)
            raise ValueError
    except ValueError:
        raise DatasetError(f"Split {text!r}: give three fractions for train, dev and test, e.g. 0.4,0.2,0.4.") from None
    return fractions


@dataclass(frozen=True)
class ImportOptions:
    """How to read a file into a task. Every field has a sensible default."""

    input_column: str | None = None
    target_column: str | None = None
    input_template: str | None = None  # e.g. "{question}\nOptions: {choices}"
    answer_regex: str | None = None  # e.g. r"####\s*(.+)$" pulls the answer out of a longer target
    answer_kind: AnswerKind | None = None  # detected when None
    extractor: str | None = None
    split: tuple[float, float, float] = (0.4, 0.2, 0.4)
    seed: int = 0
    max_labels: int = MAX_LABELS_DEFAULT
    format: str | None = None  # csv, tsv, jsonl, json; from the file suffix when None


# ---------------------------------------------------------------------------------------------
# Reading rows


# ---------------------------------------------------------------------------------------------
# Building a task


def _pick_column(
    columns: Sequence[str],
    wanted: str | None,
    candidates: Iterable[str],
    role: str,
    path: Path,
    exclude: str | None = None,
) -> str:
    if wanted:
        if wanted not in columns:
            raise DatasetError(f"{path}: no column {wanted!r} for the {role}. Columns are: {', '.join(columns)}.")
        return wanted
    lower = {c.lower(): c for c in columns}
    for cand in candidates:
        if cand in lower and lower[cand] != exclude:
            return lower[cand]
    flag = "--input-column" if role == "input" else "--target-column"
    raise DatasetError(
        f"{path}: cannot tell which column holds the {role}. Columns are: {', '.join(columns)}. Name it with {flag}."
    )


def _template_fields(template: str) -> list[str]:
    """The column names an input template uses; a DatasetError for a template that is not one."""
    how = (
        "Write column names in braces, e.g. '{question}\\nOptions: {choices}'; double a brace for a literal one ('{{')."
    )
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise DatasetError(f"--input-template {template!r}: {exc}. {how}") from None
    fields = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.strip() or name.isdigit() or any(c in name for c in ".[]") or spec or conversion:
            raise DatasetError(f"--input-template {template!r}: '{{{name}}}' is not a column name. {how}")
        fields.append(name)
    if not fields:
        raise DatasetError(f"--input-template {template!r} names no column. {how}")
    return fields


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def detect_answer_kind(answers: Sequence[str], max_labels: int = MAX_LABELS_DEFAULT) -> AnswerKind:
    if all(_NUMBER_RE.match(a.strip()) and a.strip() not in ("", ".", "+", "-") for a in answers):
        return "number"
    distinct = set(answers)
    if len(distinct) <= max_labels and len(distinct) <= max(2, len(answers) // 2):
        return "label"
    return "text"


def explain_answer_kind(kind: str, answers: Sequence[str], opts: ImportOptions) -> str:
    """Why the answers are scored the way they are, in a sentence (import prints it)."""
    distinct = len(set(answers))
    if opts.answer_kind:
        return f"{kind}, as given (--answer-type)."
    if kind == "number":
        return "number: every answer parses as a number (compared as numbers: 3 = 3.0)."
    if kind == "label":
        return (
            f"label: {distinct} distinct answers in {len(answers)} rows (at most --max-labels {opts.max_labels} "
            "and at most half the rows); the model's answer is restricted to these labels."
        )
    reason = (
        f"more than --max-labels {opts.max_labels}"
        if distinct > opts.max_labels
        else f"more than half of the {len(answers)} rows"
    )
    return (
        f"text: {distinct} distinct answers ({reason}), so not a label set; scored by exact match after "
        "normalizing case and spaces. Use --answer-type label (and --max-labels) to force labels."
    )


_MARKERS = (
    ("####", r"####\s*(.+)$"),
    ("The answer is", r"[Tt]he answer is[:\s]*(.+?)\.?$"),
    ("Answer:", r"Answer:\s*(.+)$"),
    ("\\boxed{", r"\\boxed\{([^}]*)\}"),
)


def final_answer_marker(answers: Sequence[str]) -> tuple[str, int, str] | None:
    """(marker, how many answers hold it, a regex that pulls the final answer) when at least half of the
    answers look like worked solutions ending in a final answer (GSM8K's '#### 42', 'The answer is 42')."""
    for marker, regex in _MARKERS:
        n = sum(marker.lower() in a.lower() for a in answers)
        if answers and n >= len(answers) / 2:
            return marker, n, regex
    return None


def _sort_labels(labels: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(labels), key=lambda s: (s.lower(), s)))


def assign_splits(n: int, fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Stable seeded split assignment: the same n, fractions and seed always give the same splits."""
    if len(fractions) != 3 or any(not math.isfinite(f) or f < 0 for f in fractions) or not 0 < sum(fractions) < 1e6:
        raise DatasetError("Split fractions must be three non-negative numbers (train, dev, test).")
    total = sum(fractions)
    n_test = round(n * fractions[2] / total)
    n_dev = round(n * fractions[1] / total)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    labels = [""] * n
    for rank, idx in enumerate(order):
        labels[idx] = "test" if rank < n_test else "dev" if rank < n_test + n_dev else "train"
    return labels


def build_task(
    name: str,
    path: Path,
    columns: list[str],
    rows: list[tuple[int, dict]],
    opts: ImportOptions,
    split_names: list[str] | None = None,
) -> TaskData:
    """Validate rows and turn them into a TaskData. ``split_names`` fixes splits (from separate files)."""
    validate_task_name(name)
    if opts.max_labels < 2:
        raise DatasetError(f"--max-labels {opts.max_labels}: a label task has at least 2 labels.")
    if opts.input_template and "\\n" in opts.input_template:  # typed as \n in a shell or a form: a line break
        opts = replace(opts, input_template=opts.input_template.replace("\\n", "\n"))
    if opts.input_template:
        fields = _template_fields(opts.input_template)
        missing = [f for f in fields if f not in columns]
        if missing:
            raise DatasetError(
                f"{path}: the input template uses column(s) {', '.join(missing)} that the file lacks. "
                f"Columns are: {', '.join(columns)}."
            )
        input_col = None
    else:
        input_col = _pick_column(columns, opts.input_column, INPUT_COLUMNS, "input", path)
    target_col = _pick_column(columns, opts.target_column, TARGET_COLUMNS, "target", path, exclude=input_col)
    answer_re = None
    if opts.answer_regex:
        try:
            with _warnings.catch_warnings():  # e.g. "Possible nested set": not for the user's terminal
                _warnings.simplefilter("ignore")
                answer_re = re.compile(opts.answer_regex, re.DOTALL | re.MULTILINE)
        except re.error as exc:
            raise DatasetError(
                f"--answer-regex {opts.answer_regex!r} is not a valid regular expression: {exc}."
            ) from None

    inputs, targets, answers, row_numbers = [], [], [], []
    for rownum, row in rows:
        if opts.input_template:
            values = {k: _cell(row.get(k)) for k in _template_fields(opts.input_template)}
            text = opts.input_template.format(**values)
            empty = [k for k, v in values.items() if not v.strip()]
            if empty:
                raise DatasetError(f"{path}: row {rownum}: column {empty[0]!r} is empty.")
        else:
            if input_col not in row:
                raise DatasetError(f"{path}: row {rownum}: column {input_col!r} is missing.")
            text = _cell(row.get(input_col))
            if not text.strip():
                raise DatasetError(f"{path}: row {rownum}: column {input_col!r} is empty.")
        if target_col not in row:
            raise DatasetError(f"{path}: row {rownum}: column {target_col!r} is missing.")
        target = _cell(row.get(target_col))
        if not target.strip():
            raise DatasetError(f"{path}: row {rownum}: column {target_col!r} is empty.")
        answer = target.strip()
        if answer_re is not None:
            match = answer_re.search(target)
            if not match:
                raise DatasetError(
                    f"{path}: row {rownum}: column {target_col!r}: the answer regex {opts.answer_regex!r} "
                    f"does not match {target[:60]!r}."
                )
            answer = match.group(1) if match.groups() else match.group(0)
            if answer is None:
                raise DatasetError(
                    f"{path}: row {rownum}: column {target_col!r}: the answer regex {opts.answer_regex!r} matches "
                    f"{target[:60]!r} but its group captures nothing there. Make the group required."
                )
            answer = answer.strip()
        for column, value in (((input_col or "input"), text), (target_col, target)):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800" in JSON) cannot be stored as text
                raise DatasetError(
                    f"{path}: row {rownum}: column {column!r} is not valid text at character {exc.start + 1} "
                    f"({value[exc.start]!r}, half of a UTF-16 pair). Fix the file: write the whole character."
                ) from None
        inputs.append(text)
        targets.append(target)
        answers.append(answer)
        row_numbers.append(rownum)

    # "(A)"-style labels (BIG-Bench Hard) become "A". A few rows that break the pattern (BBH has some,
    # e.g. a movie title as the answer) are kept as they are and reported, not allowed to block the rest.
    warnings: list[str] = []
    paren = [bool(_PAREN_LABEL_RE.match(a)) for a in answers]
    if paren and sum(paren) >= 0.9 * len(paren):
        odd = [(r, a) for r, a, ok in zip(row_numbers, answers, paren) if not ok]
        if odd:
            warnings.append(
                f"{len(odd)} row(s) have an answer that is not an option letter: "
                + ", ".join(f"row {r} {a!r}" for r, a in odd[:5])
                + ". They are kept as their own labels."
            )
        answers = [m.group(1) if ok and (m := _PAREN_LABEL_RE.match(a)) else a for a, ok in zip(answers, paren)]

    # Longer than a small model's context (~4 characters a token; 4096 tokens is the default context): say so
    # now. Evaluation skips such an example (counted wrong) instead of stopping.
    long_rows = [r for r, text in zip(row_numbers, inputs) if len(text) > LONG_INPUT_CHARS]
    if long_rows:
        warnings.append(
            f"{len(long_rows)} row(s) have an input over {LONG_INPUT_CHARS:,} characters (about 3,500 tokens), "
            f"which may not fit a small model's 4,096-token context: "
            + ", ".join(f"row {r}" for r in long_rows[:5])
            + ". Evaluation skips an example that does not fit and counts it wrong; shorten those rows to keep them."
        )

    merged, merge_note = _merge_case_variants(answers)
    if merge_note and (opts.answer_kind or detect_answer_kind(merged, opts.max_labels)) == "label":
        answers = merged  # scoring ignores case and spaces: one label each, not six split ways
        warnings.append(merge_note)
    kind = opts.answer_kind or detect_answer_kind(answers, opts.max_labels)
    decision = explain_answer_kind(kind, answers, opts)
    if kind == "text":
        marker = final_answer_marker(answers)
        if marker and not opts.answer_regex:
            warnings.append(
                f"{marker[1]} of {len(answers)} answers hold a worked solution with a final answer after "
                f"{marker[0]!r}; scored as whole texts they can never match. Import with --answer-regex "
                f"{marker[2]!r} (Answer regex in the TUI) to keep only the final answer."
            )
    labels: tuple[str, ...] = ()
    if kind == "label":
        labels = _sort_labels(answers)
        if len(labels) > opts.max_labels:
            raise DatasetError(
                f"{path}: column {target_col!r} has {len(labels)} distinct answers, too many for a label set "
                f"(at most {opts.max_labels}). Import with --answer-type text, or raise --max-labels."
            )
        if len(labels) < 2:
            raise DatasetError(
                f"{path}: column {target_col!r} has only one distinct answer ({labels[0]!r}); "
                "a label task needs at least two."
            )
    elif kind == "number":
        for rownum, a in zip(row_numbers, answers):
            if parse_number(a) is None:
                raise DatasetError(f"{path}: row {rownum}: column {target_col!r}: {a!r} is not a number.")

    spec = AnswerSpec(kind=kind, labels=labels, extractor=opts.extractor or "")
    splits = split_names or assign_splits(len(inputs), opts.split, opts.seed)
    examples = tuple(
        Example(input=i, answer=a, target=t, split=s, source_row=r)
        for i, a, t, s, r in zip(inputs, answers, targets, splits, row_numbers)
    )
    options = {
        "input_column": input_col,
        "target_column": target_col,
        "input_template": opts.input_template,
        "answer_regex": opts.answer_regex,
        "split": list(opts.split),
        "seed": opts.seed,
        "warnings": warnings,
        "decision": decision,
    }
    return TaskData(name=name, examples=examples, spec=spec, source=str(path), options=options)


def _merge_case_variants(answers: list[str]) -> tuple[list[str], str | None]:
    """Answers that differ only by case or spaces, merged into their most frequent spelling."""
    from collections import Counter

    groups: dict[str, Counter] = {}
    for a in answers:
        groups.setdefault(" ".join(a.split()).casefold(), Counter())[a] += 1
    variants = [c for c in groups.values() if len(c) > 1]
    if not variants:
        return answers, None
    canon = {a: c.most_common(1)[0][0] for c in groups.values() for a in c}
    note = (
        "Answers that differ only by case or spaces were merged into one label each: "
        + "; ".join(f"{', '.join(repr(v) for v in c)} -> {c.most_common(1)[0][0]!r}" for c in variants[:5])
        + (f" (and {len(variants) - 5} more)" if len(variants) > 5 else "")
        + "."
    )
    return [canon[a] for a in answers], note


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def validate_task_name(name: str) -> None:
    if not _NAME_RE.match(name or ""):
        raise DatasetError(
            f"Task name {name!r} is not allowed: use 1-64 letters, digits, '_', '-' or '.', starting with "
            "a letter or digit."
        )


def task_name_from_path(path: Path) -> str:
    stem = Path(path).stem
    if stem in ("train", "test", "dev", "data"):
        stem = Path(path).parent.name or stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-._") or "task"
    return name[:64]


def read_task_file(
    path: str | Path,
    name: str | None = None,
    options: ImportOptions | None = None,
    dev_file: str | Path | None = None,
    test_file: str | Path | None = None,
) -> TaskData:
    """Parse and validate one file (or a train file plus separate dev/test files) into a task."""
    opts = options or ImportOptions()
    path = Path(path)
    name = name or task_name_from_path(path)
    columns, rows = read_rows(path, opts.format)
    if not dev_file and not test_file:
        return build_task(name, path, columns, rows, opts)
    # Separate files fix the splits. Each file must have the same columns.
    all_rows = [(r, row) for r, row in rows]
    if dev_file:
        split_names = ["train"] * len(rows)
    else:  # the main file gives train and dev, in the train:dev proportion of --split
        split_names = assign_splits(len(rows), (opts.split[0], opts.split[1], 0.0), opts.seed)
    for extra, split in ((dev_file, "dev"), (test_file, "test")):
        if not extra:
            continue
        extra = Path(extra)
        extra_cols, extra_rows = read_rows(extra, opts.format)
        missing = [c for c in columns if c not in extra_cols]
        if missing:
            raise DatasetError(f"{extra}: missing column(s) {', '.join(missing)} that {path.name} has.")
        all_rows.extend(extra_rows)
        split_names.extend([split] * len(extra_rows))
    task = build_task(name, path, columns, all_rows, opts, split_names=split_names)
    return replace(task, options={**task.options, "dev_file": str(dev_file or ""), "test_file": str(test_file or "")})


# The tasks shipped in the package (sources and licences: data/README.md): key -> (task name, file stem, what).
SHIPPED_TASKS = {
    "topic": ("demo-topic", "demo_topic", "news-headline topic, 4 labels"),
    "sentiment": ("demo-sentiment", "demo_sentiment", "movie-review sentiment, 2 labels"),
}
DEMO_TASK = "topic"  # what `gradprompt demo` runs: a task where the default model's start has a label bias
DEMO_TASK_NAME = SHIPPED_TASKS[DEMO_TASK][0]


def demo_task_files(which: str = "sentiment") -> tuple[Path, Path]:
    """(train file, test file) of a task shipped in the package (``topic`` or ``sentiment``)."""
    data = Path(__file__).parent / "data"
    stem = SHIPPED_TASKS[which][1]
    return data / f"{stem}_train.csv", data / f"{stem}_test.csv"
