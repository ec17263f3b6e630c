"""Scoring of prompts on training examples: the exact suffix-KV scorer of single swaps, the (label-balanced)
training score, racing against a bound, and caching.

:class:`Scorer` owns the training rows' weights and the cache of training scores by prompt; the per-example
terms come from :class:`toolkit.engine.terms.Terms`, the chains from :class:`toolkit.engine.decode.Decoder`."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

from ..tasks import AnswerSpec
from .config import GreaterConfig, Item, Score
from .decode import Decoder
from .forward import Forward
from .terms import Terms
from .text import PromptText


class Scorer:
    """Training scores of prompts (lower is better), cached by prompt."""

    def __init__(
        self,
        forward: Forward,
        text: PromptText,
        terms: Terms,
        decoder: Decoder,
        spec: AnswerSpec,
        config: GreaterConfig,
        train: list[Item],
    ):
        self.torch = forward.torch
        self.forward = forward
        self.text = text
        self.terms = terms
        self.decoder = decoder
        self.spec = spec
        self.config = config
        self.train = train
        self.naive = forward.naive
        self._scores: dict[tuple, Score] = {}
        self.weights, self.granularity = self.example_weights(train)

    @contextlib.contextmanager
    def fresh_cache(self) -> Iterator[None]:
        """An empty score cache (another layout scores differently); the old one is restored afterwards."""
        saved, self._scores = self._scores, {}
        try:
            yield
        finally:
            self._scores = saved

    def suffix_terms(
        self,
        prompt: Sequence[int],
        pos: int,
        cands: Sequence[int],
        items: Sequence[Item] | None = None,
        chains: Sequence[Sequence[int]] | None = None,
    ) -> list[list[tuple]]:
        """(loss, nll, correct) for every candidate token at slot ``pos`` x every item.

        An exact saving: everything before the slot ([chat head, input, prompt[:pos]]) is the same for all
        candidates, so each example's prefix is forwarded once (left-padded batch) and its KV cache expanded
        over the candidates; only [candidate, prompt[pos+1:], end of turn, chain, extractor, answer] is
        computed per candidate, with logits only at the prompt tokens (fluency) and the answer. The NLL of the
        unchanged prompt tokens comes from the prefix pass. Same numbers as :meth:`_item_terms` on the full
        sequences with the same ``chains`` (tested), up to float rounding. Returns ``result[c][j]``.

        Direct mode: no chains. Reasoning mode: ``chains`` are held fixed (default: the current prompt's), so
        the result is a teacher-forced *approximation* of each candidate's score (its own chains would
        differ); the wide search uses it only to pre-rank candidates before fresh chains.
        """
        import copy

        from transformers import DynamicCache

        torch = self.torch
        F = torch.nn.functional
        items = self.train if items is None else list(items)
        prompt = list(prompt)
        n_p = len(prompt)
        if chains is None:
            chains = self.decoder.chains(prompt, items) if self.config.mode == "reasoning" else [[] for _ in items]
        tails = [prompt[pos + 1 :] + self.text.after_ids + list(ch) + self.text.extractor_ids for ch in chains]
        label_fast = self.terms.label_fast
        pad_id = self.text.pad_id
        dev = self.forward.device
        C = len(cands)
        cand_t = torch.tensor(list(cands), device=dev)
        out: list[list[Any]] = [[None] * len(items) for _ in range(C)]

        def run(idx):
            prefixes = [self.text.split(items[j].input) + prompt[:pos] for j in idx]
            starts = [len(self.text.split(items[j].input)) for j in idx]
            B, L = len(idx), max(len(x) for x in prefixes)
            ids = torch.full((B, L), pad_id, dtype=torch.long, device=dev)
            mask = torch.zeros((B, L), dtype=torch.long, device=dev)
            for b, x in enumerate(prefixes):
                ids[b, L - len(x) :] = torch.tensor(x, device=dev)
                mask[b, L - len(x) :] = 1
            cache = DynamicCache(config=self.forward.model.config)
            with torch.no_grad():
                hidden = self.forward.base(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    past_key_values=cache,
                    use_cache=True,
                ).last_hidden_state
                self.forward.stats["forward_tokens"] += int(mask.sum())
                fixed_nll, slot_lsm = [], []
                for b in range(B):
                    off = L - len(prefixes[b])
                    rows = [off + r for r in self.terms.prompt_positions(starts[b], n_p)[:pos]]
                    if rows:
                        lg = self.forward.logits_of(hidden[b, rows])
                        fixed_nll.append(F.cross_entropy(lg, torch.tensor(prompt[:pos], device=dev), reduction="sum"))
                    else:
                        fixed_nll.append(hidden.new_zeros((), dtype=torch.float32))
                    slot_lsm.append(
                        torch.log_softmax(self.forward.logits_of(hidden[b, L - 1]), dim=-1)
                    )  # predicts the slot
                lengths = mask.sum(-1)
                answers = [self.text.answer_ids(items[j].answer) for j in idx]
                n_ans_rows = [1 if label_fast else len(a) for a in answers]
                bodies = [tails[j] + ([] if label_fast else answers[b]) for b, j in enumerate(idx)]
                W = 1 + max(len(x) for x in bodies)
                group = max(1, (4 * max(1, self.forward.batch_size)) // B)  # rows per suffix pass ~ 4 x batch size
                for g0 in range(0, C, group):
                    gc = list(range(g0, min(C, g0 + group)))
                    G = len(gc)
                    rows_cache = copy.deepcopy(cache)
                    rows_cache.batch_repeat_interleave(G)  # row b * G + g: example b, candidate gc[g]
                    feed = torch.full((B * G, W), pad_id, dtype=torch.long, device=dev)
                    block = torch.zeros((B * G, W), dtype=torch.long, device=dev)
                    for b in range(B):
                        body = bodies[b]
                        for g, c in enumerate(gc):
                            r = b * G + g
                            feed[r, 0] = cand_t[c]
                            feed[r, 1 : 1 + len(body)] = torch.tensor(body, device=dev)  # never empty: end of turn
                            block[r, : 1 + len(body)] = 1
                    full_mask = torch.cat([mask.repeat_interleave(G, dim=0), block], dim=1)
                    position_ids = lengths.repeat_interleave(G).unsqueeze(1) + torch.arange(W, device=dev).unsqueeze(0)
                    hs = self.forward.base(
                        input_ids=feed,
                        attention_mask=full_mask,
                        position_ids=position_ids,
                        past_key_values=rows_cache,
                        use_cache=True,
                    ).last_hidden_state  # [B*G, W, D]
                    self.forward.stats["forward_tokens"] += int(block.sum())
                    n_rest = n_p - pos - 1  # prompt tokens after the slot, predicted at suffix rows 0..n_rest-1
                    a_rows = [len(tails[j]) for j in idx]  # row a_rows[b] predicts example b's first answer token
                    # One head matmul for every row needed in this pass (the [V, D] head is read once, not per row).
                    rows_r, rows_c, spans = [], [], []
                    for b in range(B):
                        for g in range(G):
                            r = b * G + g
                            start = len(rows_r)
                            rows_r += [r] * (n_rest + n_ans_rows[b])
                            rows_c += list(range(n_rest)) + list(range(a_rows[b], a_rows[b] + n_ans_rows[b]))
                            spans.append(start)
                    logits = self.forward.logits_of(
                        hs[torch.tensor(rows_r, device=dev), torch.tensor(rows_c, device=dev)]
                    )
                    if n_rest:
                        rest_t = torch.tensor(prompt[pos + 1 :], device=dev)
                    for b, j in enumerate(idx):
                        for g, c in enumerate(gc):
                            start = spans[b * G + g]
                            nll = fixed_nll[b] - slot_lsm[b][cands[c]]
                            if n_rest:
                                nll = nll + F.cross_entropy(logits[start : start + n_rest], rest_t, reduction="sum")
                            a_logits = logits[start + n_rest : start + n_rest + n_ans_rows[b]]
                            loss, correct = self.terms.answer(a_logits, items[j], answers[b])
                            out[c][j] = (loss, nll / n_p, correct)
            return None

        self.forward.map_chunks(len(items), run)
        return out

    def item_terms(self, triples: Sequence[tuple[Sequence[int], Item, list[int]]]):
        """[(loss, nll, correct)] per (prompt, item, chain): the scoring forward, batched across prompts."""
        torch = self.torch
        jobs = []
        for prompt, item, chain in triples:
            seq, p_start, a_start, ans = self.terms.sequence(item, prompt, chain)
            n_ans_rows = self.terms.answer_rows(ans)
            pos = self.terms.prompt_positions(p_start, len(prompt)) + list(range(a_start - 1, a_start - 1 + n_ans_rows))
            jobs.append((seq, pos, ans))

        def run(idx):
            with torch.no_grad():
                logits = self.forward.selected([jobs[i][0] for i in idx], [jobs[i][1] for i in idx])
            return [self.terms.of(lg, triples[i][0], triples[i][1], jobs[i][2]) for lg, i in zip(logits, idx)]

        return [t for chunk in self.forward.map_chunks(len(jobs), run) for t in chunk]

    def example_weights(self, items: Sequence[Item]) -> tuple[list[float], float]:
        """Each training example's share of the training error (the shares sum to 1) and the smallest non-zero
        difference two error values can have (the tie-break of the score stays below it).

        Plain error rate: 1/n each, granularity 1/n. Balanced (improved schedule, label task, 2+ gold labels
        among the examples): 1 / (K * n_label) for K labels, so every label weighs 1/K; two error values then
        differ by a multiple of 1 / (K * lcm(n_label)).
        """
        n = len(items)
        if not n:
            return [], 1.0
        counts: dict[str, int] = {}
        for it in items:
            counts[it.answer] = counts.get(it.answer, 0) + 1
        cfg = self.config
        if cfg.objective != "balanced" or cfg.schedule != "improved" or self.spec.kind != "label" or len(counts) < 2:
            return [1.0 / n] * n, 1.0 / n
        k = len(counts)
        return [1.0 / (k * counts[it.answer]) for it in items], 1.0 / (k * math.lcm(*counts.values()))

    @property
    def balanced(self) -> bool:
        """The training error is weighted per gold label (see :meth:`_example_weights`): the weights differ.
        With equal label counts they are all 1/n and the balanced error is the plain one."""
        return len(set(self.weights)) > 1

    def score_of(self, rows, items: Sequence[Item]) -> Score:
        """The Score of one prompt from its (answer loss, prompt NLL, correct) per item, summed in item order
        (every scoring path sums the same way, so fast and naive execution give the same floats). On the
        training items of a balanced objective the error and the answer loss are weighted per gold label."""
        n = len(items)
        weighted = items is self.train and self.balanced
        loss = nll = err = 0.0
        correct = 0
        for i, (l_i, n_i, c_i) in enumerate(rows):
            c = int(c_i)
            correct += c
            nll += float(n_i)
            if weighted:
                loss += self.weights[i] * float(l_i)
                err += self.weights[i] * (1 - c)
            else:
                loss += float(l_i)
        if not weighted:
            loss, err = loss / n, 1 - correct / n
        nll /= n
        granularity = self.granularity if weighted else 1.0 / n
        return Score(
            value=self.score_value(1 - err, nll, loss, n, granularity=granularity),
            accuracy=correct / n,
            loss=loss,
            fluency_nll=nll,
            n=n,
            objective_accuracy=1 - err,
        )

    def score_value(self, accuracy: float, nll: float, loss: float, n: int, granularity: float | None = None) -> float:
        """The training score (lower is better).

        reference: error rate + score_fluency_weight * prompt NLL + loss_weight * answer CE, so ~2 nats of
        prompt NLL can outweigh one more correct example. improved: error rate + tie-break / n, with the
        tie-break x / (1 + x) in [0, 1) for x = score_fluency_weight * NLL + loss_weight * CE: one more
        correct training example always beats any change of fluency or loss, and among prompts with the same
        number of right answers the more fluent, more confident one wins.
        """
        cfg = self.config
        x = cfg.score_fluency_weight * nll + cfg.effective_loss_weight * loss
        if cfg.schedule == "reference":
            return (1 - accuracy) + x
        return (1 - accuracy) + (x / (1 + x)) * (granularity if granularity is not None else 1 / max(1, n))

    def race_prompts(self, prompts: Sequence[Sequence[int]], bound: float) -> list[Score]:
        """Score candidate prompts on the training set, racing them against ``bound`` (an exact saving).

        ``bound`` is the score of the prompt a candidate must beat strictly (the current prompt, which wins
        ties). All candidates advance together ``race_chunk`` examples at a time (one batch across
        candidates, chains included). Every example adds a non-negative amount to a score, so once the
        examples seen so far already reach ``bound`` a candidate cannot win: it is dropped without decoding or
        scoring the rest, and its Score is marked ``raced`` with that lower bound as value. Complete scores
        are cached like :meth:`score_prompts`.
        """
        if self.naive or not self.config.race:
            return self.score_prompts(prompts)
        n = len(self.train)
        chunk = max(1, self.config.race_chunk)
        keys = list(dict.fromkeys(tuple(p) for p in prompts))
        acc: dict[tuple, dict[str, Any]] = {
            k: {"terms": [], "loss": 0.0, "nll": 0.0, "err": 0.0, "correct": 0, "chains": []}
            for k in keys
            if k not in self._scores
        }
        alive = list(acc)
        seen = 0
        partial: dict[tuple, Score] = {}
        fw, lw = self.config.score_fluency_weight, self.config.effective_loss_weight
        while alive and seen < n:
            items = self.train[seen : seen + chunk]
            pairs = [(k, item) for k in alive for item in items]
            if self.config.mode == "reasoning" and self.config.extractor_kv:
                chains, terms = self.decoder.chains_and_terms(pairs)
            else:
                chains = self.decoder.generate_pairs(pairs)
                terms = self.item_terms([(k, item, ch) for (k, item), ch in zip(pairs, chains)])
            weighted = self.balanced
            for (k, _), ch, t in zip(pairs, chains, terms):
                a = acc[k]
                w = self.weights[len(a["terms"])] if weighted else 1.0 / n  # terms come in example order
                l_i, n_i, c_i = t
                a["terms"].append(t)
                a["loss"] += w * float(l_i)
                a["nll"] += float(n_i)
                a["err"] += w * (1 - int(c_i))
                a["correct"] += int(c_i)
                a["chains"].append(ch)
            seen += len(items)
            if seen >= n:
                break
            still = []
            for k in alive:
                a = acc[k]
                # lower bounds of the final error and x: every example adds a non-negative amount to both
                x = fw * a["nll"] / n + lw * a["loss"]
                g = self.granularity if weighted else 1.0 / n
                lower = a["err"] + (x if self.config.schedule == "reference" else x / (1 + x) * g)
                if lower >= bound:
                    self.forward.stats["raced_out"] += 1
                    self.forward.stats["race_examples_skipped"] += n - seen
                    partial[k] = Score(
                        value=lower,
                        accuracy=a["correct"] / seen,
                        loss=a["loss"] / seen,
                        fluency_nll=a["nll"] / seen,
                        n=n,
                        seen=seen,
                    )
                else:
                    still.append(k)
            alive = still
        for k in alive:
            a = acc[k]
            self._scores[k] = self.score_of(a["terms"], self.train)
            if self.config.mode == "reasoning":
                self.decoder.remember(self.decoder.chain_key(k, self.train), a["chains"])
        return [partial.get(tuple(p)) or self._scores[tuple(p)] for p in prompts]

    def score_prompts(self, prompts: Sequence[Sequence[int]], items: Sequence[Item] | None = None) -> list[Score]:
        """Score several prompts on ``items`` (default: train). Train scores are cached by prompt."""
        items = self.train if items is None else items
        cacheable = items is self.train and not self.naive
        todo = [p for p in dict.fromkeys(tuple(p) for p in prompts) if not (cacheable and p in self._scores)]
        results: dict[tuple, Score] = {}
        if todo:
            n = len(items)
            # Prompts without cached chains: decode and score in one pass (extractor on the decoding cache).
            fresh = [
                p
                for p in todo
                if self.config.mode == "reasoning"
                and self.config.extractor_kv
                and not self.naive
                and not self.decoder.cached(self.decoder.chain_key(p, items))
            ]
            by_prompt: dict[tuple, list] = {}
            if fresh:
                chains, fresh_terms = self.decoder.chains_and_terms([(p, item) for p in fresh for item in items])
                for fi, p in enumerate(fresh):
                    self.decoder.remember(self.decoder.chain_key(p, items), chains[fi * n : (fi + 1) * n])
                    by_prompt[p] = fresh_terms[fi * n : (fi + 1) * n]
            rest = [p for p in todo if p not in by_prompt]
            if rest:
                triples = [(p, item, chain) for p in rest for item, chain in zip(items, self.decoder.chains(p, items))]
                rest_terms = self.item_terms(triples)
                for ri, p in enumerate(rest):
                    by_prompt[p] = rest_terms[ri * n : (ri + 1) * n]
            terms = [t for p in todo for t in by_prompt[p]]
            for pi, p in enumerate(todo):
                results[p] = self.score_of(terms[pi * n : (pi + 1) * n], items)  # summed as racing does
                if cacheable:
                    self._scores[p] = results[p]
        return [self._scores[tuple(p)] if cacheable else results[tuple(p)] for p in prompts]
