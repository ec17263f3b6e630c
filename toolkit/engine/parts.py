"""The engine's parts, each with one job, and how they are put together.

* :class:`~toolkit.engine.text.PromptText` - the tokens around the prompt (layout, answers, labels, stops);
* :class:`~toolkit.engine.forward.Forward` - the model's batched forward passes and greedy decoding;
* :class:`~toolkit.engine.terms.Terms` - one example's loss, prompt NLL and correctness from logits;
* :class:`~toolkit.engine.decode.Decoder` - reasoning chains (cached by prompt);
* :class:`~toolkit.engine.scoring.Scorer` - training scores of prompts (cached, raced, on the suffix KV);
* :class:`~toolkit.engine.predict.Predictor` - the answers an evaluation compares;
* :class:`~toolkit.engine.gradient.Proposer` - the model's candidates for a slot and the gradient over them.

The schedules (:mod:`.search`, :mod:`.reference`) and the final choice (:mod:`.final`) are functions over a
:class:`Parts`; :class:`toolkit.engine.greater.GreaterEngine` holds one and drives them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..tasks import AnswerSpec
from .config import GreaterConfig, Item
from .decode import Decoder
from .forward import Forward
from .gradient import Proposer
from .predict import Predictor
from .scoring import Scorer
from .terms import Terms
from .text import PromptText


@dataclass
class Parts:
    """One model, task and configuration's parts, and the rows they work on."""

    config: GreaterConfig
    spec: AnswerSpec
    train: list[Item]  # the scoring rows (the first ``n_train``)
    dev: list[Item]
    pool: list[Item]  # the training rows beyond ``n_train``: demonstrations are drawn from these
    text: PromptText
    forward: Forward
    terms: Terms
    decoder: Decoder
    scorer: Scorer
    predictor: Predictor
    proposer: Proposer
    demo_stats: dict = field(default_factory=dict)  # the final choice's demonstration search: sets, seconds

    @property
    def stats(self) -> dict:
        return self.forward.stats

    @property
    def events(self) -> list[str]:
        return self.forward.events

    def encode(self, text: str) -> list[int]:
        return self.text.encode(text)

    def decode(self, ids) -> str:
        return self.text.decode(ids)

    @contextlib.contextmanager
    def using_demos(self, demos: Sequence[tuple[str, str]]) -> Iterator[None]:
        """Score and predict with ``demos`` shown before every example (the caches of the other layout are set
        aside and restored afterwards)."""
        if tuple(demos) == tuple(self.text.layout.demos):
            yield
            return
        with self.text.using_demos(demos), self.decoder.fresh_cache(), self.scorer.fresh_cache():
            yield

    def out_of_time(self, stop, t_start: float, reserve: float = 0.0) -> bool:
        """A stop was asked for, or the time budget (less ``reserve``, the final choice's share) is spent: no new
        step starts."""
        budget = self.config.time_budget_s
        return (stop is not None and stop.is_set()) or (
            budget is not None and time.perf_counter() - t_start >= budget - reserve
        )


def check_config(spec: AnswerSpec, config: GreaterConfig) -> None:
    if config.search in ("calibration", "demonstrations") and config.schedule != "improved":
        raise ConfigError(f"--search {config.search} needs the improved schedule.")
    if config.search == "calibration" and spec.kind != "label":
        raise ConfigError(
            f"--search calibration applies to label tasks (this task's answers are {spec.kind}s): use --search "
            "instruction or demonstrations."
        )


def build_parts(
    tm,
    spec: AnswerSpec,
    train: Sequence[Item],
    dev: Sequence[Item],
    config: GreaterConfig,
    demos: Sequence[tuple[str, str]] = (),
) -> Parts:
    """The parts for a search on ``tm`` (a loaded torch model): the first ``n_train`` training rows are scored,
    the rest are the demonstrations' pool; the first ``n_dev`` dev rows decide the final choice. ``demos``:
    (input, answer) pairs shown before every example (a prompt version's demonstrations)."""
    rows = list(train)
    scoring, pool = rows[: config.n_train], rows[config.n_train :]
    if not scoring:
        raise ConfigError("The task has no training examples.")
    check_config(spec, config)
    text = PromptText(tm, spec, config, demos, sample_input=scoring[0].input)
    forward = Forward(tm.model, config)
    terms = Terms(text, spec, config)
    decoder = Decoder(forward, text, terms, spec, config, scoring)
    return Parts(
        config=config,
        spec=spec,
        train=scoring,
        dev=list(dev)[: config.n_dev],
        pool=pool,
        text=text,
        forward=forward,
        terms=terms,
        decoder=decoder,
        scorer=Scorer(forward, text, terms, decoder, spec, config, scoring),
        predictor=Predictor(forward, text, decoder, spec, config),
        proposer=Proposer(forward, text, terms, decoder, config, scoring),
    )


def build_predictor(tm, spec: AnswerSpec, config: GreaterConfig, demos: Sequence[tuple[str, str]] = ()) -> Predictor:
    """What a torch evaluation needs and no more: the answers a prompt gives on ``tm`` (no training rows, no
    search)."""
    text = PromptText(tm, spec, config, demos)
    forward = Forward(tm.model, config)
    terms = Terms(text, spec, config)
    return Predictor(forward, text, Decoder(forward, text, terms, spec, config, []), spec, config)
