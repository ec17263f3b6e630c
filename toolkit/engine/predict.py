"""Evaluation-time prediction with torch: the answer each prompt gives (labels by first token or whole-label
log-probability; numbers and text by grammar-held greedy generation), as the llama.cpp evaluator judges it.
A mixin of the GReaTer engine; ``GreaterEngine(..., predict_only=True)`` needs no training examples."""

from __future__ import annotations

from collections.abc import Sequence

from .config import Item


class Prediction:
    """Answers for evaluation (a mixin of the engine)."""

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

        key = self._chain_key(prompt, items)
        if (
            self.config.mode == "reasoning"
            and self.config.extractor_kv
            and not self.naive
            and self.spec.kind == "label"
            and self.label_first is not None
            and key not in self._chains
        ):
            # Chain, extractor and label in one pass over the decoding cache (no second forward).
            chains, _, preds = self._chains_terms_labels([(prompt, item) for item in items])
            self._chains[key] = chains
            return [(is_correct(pred, item.answer, "label"), pred) for item, pred in zip(items, preds)]
        heads = self._heads(prompt, items)
        if self.spec.kind == "label":
            preds = self._choose_labels(heads)
        else:
            preds = self._generate_answers(heads, answer_tokens)
        return [(is_correct(pred, item.answer, self.spec.kind), pred) for item, pred in zip(items, preds)]

    def _heads(self, prompt: Sequence[int], items: Sequence[Item]) -> list[list[int]]:
        """Each item's tokens up to the answer (its chain first in reasoning mode)."""
        chains = self.chains(prompt, items)
        return [
            self._split(item.input) + list(prompt) + self.after_ids + list(chain) + self.extractor_ids
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
        labels, label_ids = self.spec.labels, self.label_ids
        if self.label_first is not None:  # one row of logits per example
            jobs = [(h, [len(h) - 1]) for h in heads]
        else:  # every label after every example: sum of its tokens' log-probabilities
            jobs = [(h + ids, list(range(len(h) - 1, len(h) - 1 + len(ids)))) for h in heads for ids in label_ids]

        def run(idx):
            with torch.no_grad():
                return self._forward_selected([jobs[i][0] for i in idx], [jobs[i][1] for i in idx])

        logits = [lg for chunk in self._map_chunks(len(jobs), run) for lg in chunk]
        if self.label_first is not None:
            return [[float(x) for x in lg[0, self.label_first]] for lg in logits]
        out = []
        for e in range(len(heads)):
            scores = []
            for k, ids in enumerate(label_ids):
                lp = torch.log_softmax(logits[e * len(labels) + k].double(), dim=-1)
                rows, cols = torch.arange(len(ids), device=lp.device), torch.tensor(ids, device=lp.device)
                scores.append(float(lp[rows, cols].sum()))
            out.append(scores)
        return out

    def _token_texts(self) -> list[str]:
        """Each token id's text ('' for special tokens), computed once per tokenizer."""
        tok = self.tm.tokenizer
        texts = getattr(tok, "_gradprompt_token_texts", None)
        if texts is None:
            special = set(getattr(tok, "all_special_ids", None) or [])
            texts = ["" if i in special else tok.decode([i]) for i in range(len(tok))]
            tok._gradprompt_token_texts = texts
        return texts

    def _generate_answers(self, heads: list[list[int]], max_tokens: int) -> list[str | None]:
        """Greedy answers under the answer grammar's rules (see :func:`toolkit.evaluate.answer_prefix_ok`)."""
        from transformers import LogitsProcessor

        from ..tasks import answer_complete, answer_from_text, answer_prefix_ok

        torch = self.torch
        kind = self.spec.kind
        texts = self._token_texts()
        stop = sorted(self.stop_ids)
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

        engine = self

        class AnswerShape(LogitsProcessor):
            def __init__(self, start: int):
                self.start = start

            def __call__(self, input_ids, scores):
                for b in range(scores.shape[0]):
                    gen = input_ids[b, self.start :].tolist()
                    if any(t in engine.stop_ids for t in gen):
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
            gens = self._greedy([heads[i] for i in idx], max_tokens, make_processor=AnswerShape)
            return [answer_from_text(self.decode(toks), kind) for toks in gens]

        for chunk in self._map_chunks(len(heads), run):
            out.extend(chunk)
        return out

    def _label_fast(self) -> bool:
        return self.spec.kind == "label" and self.label_first is not None and self.config.schedule == "improved"
