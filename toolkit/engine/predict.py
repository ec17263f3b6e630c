"""Evaluation-time prediction with torch: the answer each prompt gives (labels by first token or whole-label
log-probability; numbers and text by grammar-held greedy generation), as the llama.cpp evaluator judges it.

:class:`Predictor` needs no training rows: the torch evaluation (``compare``) builds it alone
(:func:`toolkit.engine.parts.build_predictor`), the search's final choice through its parts."""

from __future__ import annotations

from collections.abc import Sequence

from ..tasks import AnswerSpec
from .config import GreaterConfig, Item
from .decode import Decoder
from .forward import Forward
from .text import PromptText


class Predictor:
    """Answers for evaluation."""

    def __init__(self, forward: Forward, text: PromptText, decoder: Decoder, spec: AnswerSpec, config: GreaterConfig):
        self.torch = forward.torch
        self.forward = forward
        self.text = text
        self.decoder = decoder
        self.spec = spec
        self.config = config

    def predict_items(
        self, prompt: Sequence[int], items: Sequence[Item], answer_tokens: int = 16, calibration=None
    ) -> list[tuple[bool, str | None]]:
        """(correct, predicted answer) per item under ``prompt``: the torch side of an evaluation.

        The llama.cpp evaluator's rules (:mod:`toolkit.evaluate`), so the two runtimes are comparable: labels
        by the first answer token when the labels' first tokens differ, else by whole-label log-probability;
        numbers and free text by greedy generation held to the same shapes as the llama.cpp grammar (a number;
        one line), at most ``answer_tokens`` tokens, compared after the same normalization. A ``calibration``
        (:class:`toolkit.calibration.Calibration`, label tasks) shifts the label scores before the argmax.
        """
        from ..tasks import is_correct

        if calibration is not None and self.spec.kind == "label":
            scores = self.label_scores_items(prompt, items)
            preds = [self.spec.labels[calibration.choose(row)] for row in scores]
            return [(is_correct(pred, item.answer, "label"), pred) for item, pred in zip(items, preds)]

        key = self.decoder.chain_key(prompt, items)
        if (
            self.config.mode == "reasoning"
            and self.config.extractor_kv
            and not self.forward.naive
            and self.spec.kind == "label"
            and self.text.label_first is not None
            and not self.decoder.cached(key)
        ):
            # Chain, extractor and label in one pass over the decoding cache (no second forward).
            chains, _, preds = self.decoder.chains_terms_labels([(prompt, item) for item in items])
            self.decoder.remember(key, chains)
            return [(is_correct(pred, item.answer, "label"), pred) for item, pred in zip(items, preds)]
        heads = self._heads(prompt, items)
        if self.spec.kind == "label":
            preds = self._choose_labels(heads)
        else:
            preds = self._generate_answers(heads, answer_tokens)
        return [(is_correct(pred, item.answer, self.spec.kind), pred) for item, pred in zip(items, preds)]

    def _heads(self, prompt: Sequence[int], items: Sequence[Item]) -> list[list[int]]:
        """Each item's tokens up to the answer (its chain first in reasoning mode)."""
        chains = self.decoder.chains(prompt, items)
        return [
            self.text.split(item.input) + list(prompt) + self.text.after_ids + list(chain) + self.text.extractor_ids
            for item, chain in zip(items, chains)
        ]

    def label_scores_items(self, prompt: Sequence[int], items: Sequence[Item]) -> list[list[float]]:
        """Each item's raw label scores under ``prompt`` (what the label rule compares; a calibration is fitted
        on and applied to these): first-token logits when the labels' first tokens differ, else whole-label
        log-probabilities."""
        return self._label_scores(self._heads(prompt, items))

    def _choose_labels(self, heads: list[list[int]]) -> list[str]:
        labels = self.spec.labels
        from ..calibration import argmax

        return [labels[argmax(row)] for row in self._label_scores(heads)]

    def _label_scores(self, heads: list[list[int]]) -> list[list[float]]:
        torch = self.torch
        labels, label_ids, label_first = self.spec.labels, self.text.label_ids, self.text.label_first
        if label_first is not None:  # one row of logits per example
            jobs = [(h, [len(h) - 1]) for h in heads]
        else:  # every label after every example: sum of its tokens' log-probabilities
            jobs = [(h + ids, list(range(len(h) - 1, len(h) - 1 + len(ids)))) for h in heads for ids in label_ids]

        def run(idx):
            with torch.no_grad():
                return self.forward.selected([jobs[i][0] for i in idx], [jobs[i][1] for i in idx])

        logits = [lg for chunk in self.forward.map_chunks(len(jobs), run) for lg in chunk]
        if label_first is not None:
            return [[float(x) for x in lg[0, label_first]] for lg in logits]
        out = []
        for e in range(len(heads)):
            scores = []
            for k, ids in enumerate(label_ids):
                lp = torch.log_softmax(logits[e * len(labels) + k].double(), dim=-1)
                rows, cols = torch.arange(len(ids), device=lp.device), torch.tensor(ids, device=lp.device)
                scores.append(float(lp[rows, cols].sum()))
            out.append(scores)
        return out

    def _generate_answers(self, heads: list[list[int]], max_tokens: int) -> list[str | None]:
        """Greedy answers under the answer grammar's rules (see :func:`toolkit.evaluate.answer_prefix_ok`)."""
        from transformers import LogitsProcessor

        from ..tasks import answer_complete, answer_from_text, answer_prefix_ok

        torch = self.torch
        kind = self.spec.kind
        texts = self.text.token_texts()
        stop_ids = self.text.stop_ids
        stop = sorted(stop_ids)
        if kind == "number":  # few candidates: each checked against the grammar as the answer grows
            chars = set(" -0123456789,.")
            pool = [i for i, t in enumerate(texts) if t and set(t) <= chars]

            def allowed(text: str) -> list[int]:
                return [i for i in pool if answer_prefix_ok(text + texts[i], kind)]
        else:  # one line: a first token that starts with the space, then any token without a newline
            pool = [i for i, t in enumerate(texts) if t and "\n" not in t]
            first = [i for i in pool if texts[i].startswith(" ")]

            def allowed(text: str) -> list[int]:
                return list(pool if text else first)

        class AnswerShape(LogitsProcessor):
            def __init__(self, start: int):
                self.start = start

            def __call__(self, input_ids, scores):
                for b in range(scores.shape[0]):
                    gen = input_ids[b, self.start :].tolist()
                    if any(t in stop_ids for t in gen):
                        continue  # finished; generate pads it
                    text = "".join(texts[t] for t in gen)
                    ok = allowed(text)
                    if answer_complete(text, kind) or not ok:
                        ok += stop
                    keep = torch.full_like(scores[b], float("-inf"))
                    keep[torch.tensor(ok, device=scores.device)] = 0
                    scores[b] = scores[b] + keep
                return scores

        out: list[str | None] = []

        def run(idx):
            gens = self.forward.greedy(
                [heads[i] for i in idx], max_tokens, self.text.pad_id, stop_ids, make_processor=AnswerShape
            )
            return [answer_from_text(self.text.decode(toks), kind) for toks in gens]

        for chunk in self.forward.map_chunks(len(heads), run):
            out.extend(chunk)
        return out
