"""GReaTer: gradient prompt optimization through the model's own reasoning.

See docs/engine.md for the method, each setting, and how the ``improved`` schedule differs from the
``reference`` one. The engine is a generator of step records: it never prints and checks a stop signal
between phases.

:class:`GreaterEngine` is small: it builds the parts (:mod:`.parts`: the prompt's tokens, the forward passes,
the per-example terms, the chains, the scorer, the predictor and the proposer, each with one job) and drives a
schedule over them - :func:`.search.run_improved` with :func:`.final.finish_improved` (the default), or
:func:`.reference.run_reference` with :func:`.reference.finish_reference` (the published one).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from ..errors import ConfigError
from ..tasks import AnswerSpec
from .config import GreaterConfig, Item, RunResult, Score, StepRecord
from .final import finish_improved
from .parts import Parts, build_parts
from .reference import finish_reference, run_reference
from .search import run_improved

__all__ = ["GreaterConfig", "GreaterEngine", "Item", "RunResult", "Score", "StepRecord"]


class GreaterEngine:
    """The GReaTer search on one model and task."""

    def __init__(
        self,
        tm,
        spec: AnswerSpec,
        train: Sequence[Item],
        dev: Sequence[Item],
        config: GreaterConfig,
        *,
        demos: Sequence[tuple[str, str]] = (),
    ):
        """``tm``: a loaded torch model (:mod:`.torch_backend`). The first ``config.n_train`` training rows are
        scored; the rest are the pool that demonstration sets are drawn from (never the rows they are scored
        on). ``demos``: (input, answer) pairs shown before every example (a prompt version's demonstrations)."""
        self.tm = tm
        self.config = config
        self.spec = spec
        self.parts: Parts = build_parts(tm, spec, train, dev, config, demos)
        p = self.parts
        self.train, self.dev = p.train, p.dev
        self.text, self.forward, self.decoder = p.text, p.forward, p.decoder
        self.scorer, self.predictor, self.proposer = p.scorer, p.predictor, p.proposer

    @property
    def stats(self) -> dict:
        """Counters of the work done: tokens forwarded (with and without gradients), prefix tokens reused,
        candidates raced out."""
        return self.parts.stats

    @property
    def demo_stats(self) -> dict:
        return self.parts.demo_stats

    def encode_prompt(self, text: str) -> list[int]:
        return self.text.encode(text)

    def decode(self, ids) -> str:
        return self.text.decode(ids)

    def initial_state(self, prompt_text: str) -> dict:
        ids = self.encode_prompt(prompt_text)
        if not ids:
            raise ConfigError("The initial prompt is empty.")
        if not self.text.roundtrips(ids):
            self.parts.events.append(
                "the starting prompt's tokens change when its text is tokenized with the input around it (it "
                "starts or ends with spaces?): the search scores it as tokenized alone, llama.cpp as a whole"
            )
        return {
            "prompt_ids": ids,
            "pos": 0,
            "step": 0,
            "visited": [],
            "top": [],
            "initial_len": len(ids),
            "initial_ids": list(ids),
        }

    def run(self, state: dict, stop: threading.Event | None = None) -> Iterator[StepRecord]:
        """Optimize from ``state`` (see :meth:`initial_state`), yielding one record per step.

        Each record carries ``state``: pass it back to continue exactly where the run stopped.
        """
        if self.config.schedule == "improved":
            return run_improved(self.parts, state, stop)
        return run_reference(self.parts, state, stop)

    def finish(self, state: dict) -> RunResult:
        """Pick the final prompt. improved: a paired dev test against the starting prompt
        (:func:`.final.finish_improved`); reference: the best dev accuracy among the top prompts."""
        if self.config.schedule == "improved":
            return finish_improved(self.parts, state)
        return finish_reference(self.parts, state)
