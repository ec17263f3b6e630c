"""Reasoning chains: greedy chains under a prompt (cached by prompt), and chains decoded together with the
extractor and answer scored on the decoding cache (no second forward).

:class:`Decoder` owns the chain cache; in direct mode every chain is empty."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from ..tasks import AnswerSpec
from .config import GreaterConfig, Item
from .forward import Forward
from .terms import Terms
from .text import PromptText


class Decoder:
    """Reasoning-mode chains, cached by (prompt, items)."""

    def __init__(
        self,
        forward: Forward,
        text: PromptText,
        terms: Terms,
        spec: AnswerSpec,
        config: GreaterConfig,
        train: list[Item],
    ):
        self.torch = forward.torch
        self.forward = forward
        self.text = text
        self.terms = terms
        self.spec = spec
        self.config = config
        self.train = train  # the training rows: their chains are cached under a short key
        self._chains: dict[tuple, list[list[int]]] = {}

    @property
    def caching(self) -> bool:
        return not self.forward.naive

    def cached(self, key: tuple) -> bool:
        return key in self._chains

    def remember(self, key: tuple, chains: list[list[int]]) -> None:
        self._chains[key] = chains

    @contextlib.contextmanager
    def fresh_cache(self) -> Iterator[None]:
        """An empty cache (another layout's chains differ); the old one is restored afterwards."""
        saved, self._chains = self._chains, {}
        try:
            yield
        finally:
            self._chains = saved

    def chains(self, prompt: Sequence[int], items: Sequence[Item] | None = None) -> list[list[int]]:
        """Greedy reasoning chains for ``items`` (default: train) under ``prompt``; cached by prompt."""
        items = self.train if items is None else items
        if self.config.mode == "direct":
            return [[] for _ in items]
        key = self.chain_key(prompt, items)
        if key in self._chains and self.caching:
            return self._chains[key]
        out = self.generate_chains(prompt, items)
        if self.caching:
            self._chains[key] = out
        return out

    def chain_key(self, prompt: Sequence[int], items: Sequence[Item]) -> tuple:
        # By content: an id() of a temporary list can be reused by another list after it is freed.
        return (tuple(prompt), 0 if items is self.train else tuple(item.input for item in items))

    def generate_chains(self, prompt: Sequence[int], items: Sequence[Item]) -> list[list[int]]:
        """Greedy decoding of ``items`` under ``prompt`` (no cache), batched by the batch size."""
        return self.generate_pairs([(prompt, item) for item in items])

    def generate_pairs(self, pairs: Sequence[tuple[Sequence[int], Item]]) -> list[list[int]]:
        """Greedy chains for (prompt, item) pairs, any mix of prompts in one batch."""
        if self.config.mode == "direct":
            return [[] for _ in pairs]
        out: list[list[int]] = []

        def run_chunk(idx):
            seqs = [self.text.split(pairs[i][1].input) + list(pairs[i][0]) + self.text.after_ids for i in idx]
            return self.forward.greedy(seqs, self.config.max_new_tokens, self.text.pad_id, self.text.stop_ids)

        for chunk in self.forward.map_chunks(len(pairs), run_chunk):
            out.extend(chunk)
        return out

    def chains_and_terms(self, pairs: Sequence[tuple[Sequence[int], Item]]):
        """Chains and (loss, nll, correct) for (prompt, item) pairs in one pass per batch (reasoning mode)."""
        chains, terms, _ = self.chains_terms_labels(pairs)
        return chains, terms

    def chains_terms_labels(self, pairs: Sequence[tuple[Sequence[int], Item]]):
        """Chains, (loss, nll, correct) and, when the labels' first tokens differ, the predicted label, for
        (prompt, item) pairs in one pass per batch (reasoning mode).

        Prefill [input, prompt, end of turn] (left-padded), read the prompt-token logits from it, decode
        greedily with the KV cache, then feed only [last chain token, extractor, answer] on top of that cache.
        The same numbers as decoding with ``generate`` and re-forwarding the whole sequence, without the
        second forward.
        """
        torch = self.torch
        pad_id = self.text.pad_id
        max_new = self.config.max_new_tokens
        label_first = self.text.label_first
        logits_of = self.forward.logits_of
        stop_ids = self.text.stop_ids
        base = self.forward.base

        def run_chunk(idx):
            from transformers import DynamicCache

            heads, starts = [], []
            for i in idx:
                prompt, item = pairs[i]
                before = self.text.split(item.input)
                heads.append(before + list(prompt) + self.text.after_ids)
                starts.append(len(before))
            B, L = len(idx), max(len(h) for h in heads)
            dev = self.forward.device
            ids = torch.full((B, L), pad_id, dtype=torch.long, device=dev)
            mask = torch.zeros((B, L), dtype=torch.long, device=dev)
            for b, h in enumerate(heads):
                ids[b, L - len(h) :] = torch.tensor(h, device=dev)
                mask[b, L - len(h) :] = 1
            cache = DynamicCache(
                config=self.forward.model.config
            )  # sliding-window layers (Gemma) as generate builds them
            with torch.no_grad():
                hidden = base(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    past_key_values=cache,
                    use_cache=True,
                ).last_hidden_state
                self.forward.stats["forward_tokens"] += int(mask.sum())
                prompt_logits = []
                for b, i in enumerate(idx):
                    off, n_p = L - len(heads[b]), len(pairs[i][0])
                    rows = [off + p for p in self.terms.prompt_positions(starts[b], n_p)]
                    prompt_logits.append(logits_of(hidden[b, rows]))
                nxt = logits_of(hidden[:, -1]).argmax(-1).tolist()
                chains = [[] for _ in idx]
                live = [True] * B
                unfed = [False] * B  # the row's last chain token is not in the cache yet
                lengths = mask.sum(-1).tolist()
                while True:
                    for b in range(B):
                        if not live[b]:
                            continue
                        if nxt[b] in stop_ids:
                            live[b] = False
                        else:
                            chains[b].append(nxt[b])
                            unfed[b] = True
                            if len(chains[b]) >= max_new:
                                live[b] = False
                    if not any(live):
                        break
                    feed = [chains[b][-1] if live[b] else pad_id for b in range(B)]
                    col = torch.tensor([[1 if live[b] else 0] for b in range(B)], device=dev)
                    mask = torch.cat([mask, col], dim=1)
                    pos = torch.tensor([[lengths[b]] for b in range(B)], device=dev)
                    out = base(
                        input_ids=torch.tensor(feed, device=dev).unsqueeze(1),
                        attention_mask=mask,
                        position_ids=pos,
                        past_key_values=cache,
                        use_cache=True,
                    ).last_hidden_state
                    self.forward.stats["forward_tokens"] += sum(live)
                    for b in range(B):
                        if live[b]:
                            lengths[b] += 1
                            unfed[b] = False
                    nxt = logits_of(out[:, -1]).argmax(-1).tolist()
                # The extractor and the answer on top of each row's cache.
                blocks, answers = [], []
                for b, i in enumerate(idx):
                    ans = self.text.answer_ids(pairs[i][1].answer)
                    answers.append(ans)
                    blocks.append(([chains[b][-1]] if unfed[b] else []) + self.text.extractor_ids + ans)
                W = max(len(x) for x in blocks)
                feed = torch.full((B, W), pad_id, dtype=torch.long, device=dev)
                block_mask = torch.zeros((B, W), dtype=torch.long, device=dev)
                for b, blk in enumerate(blocks):
                    feed[b, : len(blk)] = torch.tensor(blk, device=dev)
                    block_mask[b, : len(blk)] = 1
                pos = torch.tensor(lengths, device=dev).unsqueeze(1) + torch.arange(W, device=dev).unsqueeze(0)
                out = base(
                    input_ids=feed,
                    attention_mask=torch.cat([mask, block_mask], dim=1),
                    position_ids=pos,
                    past_key_values=cache,
                    use_cache=True,
                ).last_hidden_state
                self.forward.stats["forward_tokens"] += int(block_mask.sum())
                results = []
                for b, i in enumerate(idx):
                    n_rows = self.terms.answer_rows(answers[b])
                    first = len(blocks[b]) - len(answers[b]) - 1  # predicts the first answer token
                    ans_logits = logits_of(out[b, first : first + n_rows])
                    logits = torch.cat([prompt_logits[b], ans_logits], dim=0)
                    label = (
                        self.spec.labels[int(ans_logits[0, label_first].argmax())] if label_first is not None else None
                    )
                    results.append((chains[b], self.terms.of(logits, pairs[i][0], pairs[i][1], answers[b]), label))
            return results

        flat = [r for chunk in self.forward.map_chunks(len(pairs), run_chunk) for r in chunk]
        return [c for c, _, _ in flat], [t for _, t, _ in flat], [lab for _, _, lab in flat]
