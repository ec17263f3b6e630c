"""The GReaTer engine's settings and records, with no torch import: GreaterConfig (every constant of the method),
Score (a prompt's training score), Item (one example) and RunResult (what a finished search returns). The CLI,
the planner, the TUI and the store read these without loading torch."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields

from ..errors import ConfigError
from ..layout import CHAIN_CAP
from ..selection import DEFAULT_DEV_SIZE

SEARCH_PARTS = ("all", "instruction", "demonstrations", "calibration")
REFERENCE_TOKEN_FILTER = r"^ ?[A-Za-z]+$|^[.,]$"


# Settings as the user names them on the command line (error messages speak in flags, not field names).
_FLAGS = {
    "n_train": "--train-size",
    "n_dev": "--dev-size",
    "max_new_tokens": "--max-new-tokens",
    "batch_size": "--batch-size",
    "dev_every": "--dev-every",
    "steps": "--steps",
    "width": "--width",
    "probe": "--probe",
    "topk": "top-k",
    "topq": "top-q",
}


def _flag(name: str) -> str:
    return _FLAGS.get(name, name)


@dataclass(frozen=True)
class GreaterConfig:
    """Every constant of the method. Defaults are the reference values unless noted."""

    schedule: str = "improved"  # "improved" (fixes the reference's bugs) or "reference"
    mode: str = "direct"  # "direct": answer follows the prompt; "reasoning": the paper's method
    steps: int = 100
    n_train: int = 50
    n_dev: int = DEFAULT_DEV_SIZE  # all dev rows up to this many (toolkit.selection)
    topk: int = 40  # per-example top-k of the next-token distribution at the slot
    topq: int = 6  # rounds of intersections (the reference's flag name; not a gradient top-q)
    intersect: int = 5  # examples per intersection
    min_candidates: int = 6  # grow k by 2 until |V'| >= this
    n_grad_candidates: int = 3  # tokens kept by the gradient filter (hard-coded 3 in the reference)
    ce_temperature: float = 0.2
    grad_fluency_weight: float = 0.2  # fluency term in the gradient loss
    score_fluency_weight: float = 0.02  # fluency term in the candidate score
    loss_weight: float | None = None  # answer-loss tie-break in the score: 0 (reference), 0.01 (improved)
    token_filter: str = REFERENCE_TOKEN_FILTER
    max_new_tokens: int = CHAIN_CAP  # reasoning chain cap (the reference uses 1024; see layout.CHAIN_CAP)
    max_prompt_tokens: int = 50
    top_keep: int = 10
    select_on_dev: bool = True
    batch_size: int = 16
    seed: int = 0
    # "fast" (batched, cached, logits only where needed) or "naive" (batch size 1, no caches, full logits:
    # the way the reference executes). Both make the same choices; the benchmark compares their speed.
    execution: str = "fast"
    time_budget_s: float | None = None  # stop starting new steps after this many seconds (then finish normally)
    prefix_cache: bool = True  # fast execution: compute the shared chat head once per batch (exact saving)
    # Candidate racing (fast execution, improved schedule; exact): score candidates race_chunk examples at a
    # time and drop one as soon as its partial score already reaches the best complete score.
    race: bool = True
    race_chunk: int = 8
    # Reasoning mode, fast execution: decode the chains with our own greedy loop and score the extractor and
    # answer from that KV cache (and the prompt tokens from the prefill), instead of a second full forward.
    extractor_kv: bool = True
    dev_every: int = 0  # also score the step's prompt on the dev split every N steps (progress only; 0: never)
    # ---- the improved schedule's wide search (docs/engine.md, "Wide search") ----
    pool: int = 32  # improved: grow the proposal's k until the candidate pool has this many tokens
    width: int = 0  # improved: candidates fully scored per step by gradient rank (0: automatic, from the budget)
    width_max: int = 64  # the adaptive width never exceeds this
    probe: int = 4  # improved: random extra candidates fully scored each step to measure the gradient's worth
    rank: str = "gradient"  # improved: "gradient" (GReaTer) or "random" (the ablation: same pool, random order)
    suffix_kv: bool = True  # direct mode: score candidates on each example's KV cache of the unchanged prefix (exact)
    roundtrip: bool = True  # keep only candidates whose prompt text tokenizes back to the same tokens
    fresh: int = 4  # reasoning mode: after a teacher-forced pre-rank on the current chains (approximate), only
    # this many candidates get fresh chains and a full score (0: every scored candidate gets fresh chains)
    # improved: the prompt may grow past a sentence's full stop (a second sentence), up to max_prompt_tokens; the
    # longer prompt must still score better. The reference wraps to the start after a "." instead.
    grow_past_stop: bool = True
    pair_swaps: int = 6  # improved: after a fruitless sweep, try two-token changes among this many best single swaps
    dev_top: int = 4  # improved: best prompts by training score compared with the starting prompt on dev
    # improved, label tasks: what the training score counts. "balanced": the mean error per gold label (each label
    # weighs the same however many training examples it has, so a prompt cannot gain by answering the majority
    # label); "accuracy": the plain error rate. Number and text tasks always use the error rate.
    objective: str = "balanced"
    alpha: float = 0.05  # improved: significance level of that paired test (the fallback procedure over dev_top)
    # improved, label tasks: the final choice also compares each prompt (the start among them) with a label
    # calibration fitted on the training rows (toolkit.calibration): "batch", "contextual" or "none"
    calibrate: str = "batch"
    # improved: which parts of the prompt the run searches (toolkit/engine/final.py). "all": the instruction
    # (GReaTer steps), demonstration sets and the label decision (calibrated variants) in the final choice;
    # "instruction": GReaTer alone (as before 2026-12-06); "demonstrations": no steps, the start against the start
    # with demonstration sets; "calibration": no steps, the start against its calibrated variant (label tasks).
    search: str = "all"
    demo_max: int = 4  # demonstrations per set at most (0: no demonstration search)
    demo_sets: int = 6  # demonstration sets scored on the training rows
    demo_keep: int = 2  # best sets (by training score) compared on dev
    demo_tokens: int = 768  # a set's demonstrations in tokens at most (the context the model has for them)

    def __post_init__(self):
        if self.execution not in ("fast", "naive"):
            raise ConfigError(f"Unknown execution {self.execution!r}: use fast or naive.")
        if self.schedule not in ("improved", "reference"):
            raise ConfigError(f"Unknown schedule {self.schedule!r}: use improved or reference.")
        if self.mode not in ("direct", "reasoning"):
            raise ConfigError(f"Unknown mode {self.mode!r}: use direct or reasoning.")
        if self.rank not in ("gradient", "random"):
            raise ConfigError(f"Unknown rank {self.rank!r}: use gradient or random.")
        if self.search not in SEARCH_PARTS:
            raise ConfigError(f"Unknown --search {self.search!r}: use {', '.join(SEARCH_PARTS)}.")
        if self.search == "calibration" and self.calibrate == "none":
            raise ConfigError("--search calibration needs a calibration: --calibrate batch or contextual.")
        if self.calibrate not in ("none", "batch", "contextual"):
            raise ConfigError(f"Unknown calibration {self.calibrate!r}: use none, batch or contextual.")
        if self.objective not in ("balanced", "accuracy"):
            raise ConfigError(f"Unknown objective {self.objective!r}: use balanced or accuracy.")
        for name in (
            "width",
            "probe",
            "pair_swaps",
            "fresh",
            "n_dev",
            "dev_every",
            "demo_max",
            "demo_sets",
            "demo_keep",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must be 0 or more (it is {getattr(self, name)}).")
        if not 0 < self.alpha < 1:
            raise ConfigError("alpha must be between 0 and 1.")
        for name in (
            "steps",
            "n_train",
            "topk",
            "topq",
            "intersect",
            "n_grad_candidates",
            "batch_size",
            "race_chunk",
            "max_new_tokens",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_flag(name)} must be at least 1 (it is {getattr(self, name)}).")
        if self.time_budget_s is not None and not (self.time_budget_s > 0 and math.isfinite(self.time_budget_s)):
            raise ConfigError(f"--budget must be a positive number of seconds (it is {self.time_budget_s}).")
        try:
            re.compile(self.token_filter)
        except re.error as exc:
            raise ConfigError(f"token_filter {self.token_filter!r} is not a valid regular expression: {exc}") from None

    @property
    def effective_loss_weight(self) -> float:
        if self.loss_weight is not None:
            return self.loss_weight
        return 0.0 if self.schedule == "reference" else 0.05

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GreaterConfig:
        names = {f.name for f in fields(cls)}
        # runs stored before the whole-prompt search existed conclude as they would have
        data = {"calibrate": "none", "search": "instruction", **data}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Score:
    """Training score of one prompt. Lower ``value`` is better."""

    value: float
    accuracy: float
    loss: float
    fluency_nll: float
    n: int
    # Racing: a candidate dropped after ``seen`` < n examples; ``value`` is then a lower bound of its score
    # (already no better than the best complete one) and accuracy/loss/nll cover the seen examples only.
    seen: int | None = None
    # The accuracy the score counts: the mean recall per gold label with the "balanced" objective on a label
    # task, else the plain accuracy (then equal to ``accuracy``).
    objective_accuracy: float | None = None

    @property
    def raced(self) -> bool:
        return self.seen is not None and self.seen < self.n


@dataclass
class Item:
    input: str
    answer: str


@dataclass
class RunResult:
    prompt: str
    prompt_ids: list[int]
    train: Score | None
    dev_accuracy: float | None
    top: list[dict] = field(default_factory=list)
    steps_done: int = 0
    selection: dict | None = None  # improved schedule: the paired dev test against the starting prompt
    stop_reason: str | None = None  # why the search ended before its steps or budget ran out
    calibration: dict | None = None  # the chosen prompt's label calibration (toolkit.calibration), if any
    demos: list | None = None  # the chosen prompt's demonstrations [[input, answer], ...], if any


# ---------------------------------------------------------------------------------------------- step records

try:  # Python 3.11+: NotRequired from typing; 3.10 has it in typing_extensions
    from typing import NotRequired, TypedDict
except ImportError:  # pragma: no cover
    from typing import NotRequired

    from typing_extensions import TypedDict


class SearchInfo(TypedDict, total=False):
    """What one step of the improved schedule searched (stored as the step's ``search`` JSON)."""

    kind: str  # "single" (one position), "grow" (a token added at the end) or "pair" (two-token change)
    pool: int  # deployable proposals (after the round-trip filter)
    dropped_roundtrip: int  # proposals whose text does not tokenize back to the same ids
    width: int  # candidates taken by rank
    probe: int  # random extra candidates scored to measure the ranking
    scored: int
    fully_scored: int  # scored on every training example (not dropped by racing)
    better: int  # candidates strictly better than the current prompt
    preranked: int  # reasoning mode: candidates pre-ranked teacher-forced on the current chains
    agreement: float | None  # Spearman between the gradient's rank and the true scores
    rank: str | None  # "gradient" or "random"
    bound: float  # the score a candidate had to beat
    stop_reason: str  # set on the last step when the search converged
    objective: str  # "balanced" when the training error is weighted per gold label
    train_balanced_accuracy: float


class StepRecord(TypedDict):
    """One step as every optimizer yields it (GReaTer's schedules and the APE/OPRO/initial/CoT baselines), and as
    :func:`toolkit.lifecycle.drive`, the printers, the TUI and the store consume it. The schema lives here; the
    store keeps :data:`STORED_STEP_FIELDS` of it (``state`` is the engine state to resume from)."""

    step: int
    position: int  # the prompt position searched (-1: a two-token step; 0 for baselines)
    prompt_before: str
    prompt_after: str
    prompt_ids: list[int]
    chosen_token: str
    accepted: bool  # the prompt changed
    candidates: list[dict]  # every candidate scored: token/text, grad, rank, probe, score, accuracy, loss, nll
    train_score: float  # lower is better
    train_accuracy: float
    timings: dict[str, float]  # seconds per phase
    state: dict  # the engine state after this step (resume from it)
    events: list[str]  # notices for the user (e.g. out-of-memory halving)
    dev_accuracy: NotRequired[float | None]
    train_nll: NotRequired[float]
    search: NotRequired[SearchInfo]
    kind: NotRequired[str]
    grown: NotRequired[bool]
    stuck: NotRequired[bool]
    proposed: NotRequired[int]


# What the history keeps of each step (besides ``accepted``, ``dev_accuracy`` and ``search``).
STORED_STEP_FIELDS = (
    "step",
    "position",
    "prompt_before",
    "prompt_after",
    "prompt_ids",
    "chosen_token",
    "candidates",
    "train_score",
    "train_accuracy",
    "state",
    "timings",
)
