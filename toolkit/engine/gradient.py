"""What the model suggests for one slot of the prompt: the proposal (its own next-token candidates, intersected
across training examples) and the gradient of the training loss through a one-hot slot over those candidates,
taken through the reasoning chain (GReaTer's phases B and C; docs/engine.md)."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from .config import GreaterConfig, Item
from .decode import Decoder
from .forward import Forward
from .terms import Terms
from .text import PromptText


class Proposer:
    """Candidate tokens for a slot and the loss gradient over them, on the training rows."""

    def __init__(
        self,
        forward: Forward,
        text: PromptText,
        terms: Terms,
        decoder: Decoder,
        config: GreaterConfig,
        train: list[Item],
    ):
        self.torch = forward.torch
        self.forward = forward
        self.text = text
        self.terms = terms
        self.decoder = decoder
        self.config = config
        self.train = train
        self._filter_mask = None

    def token_filter_mask(self):
        """[V] bool: tokens the filter allows as prompt tokens."""
        if self._filter_mask is None:
            torch = self.torch
            tokenizer = self.text.tokenizer
            pattern = re.compile(self.config.token_filter)
            V = self.forward.head.weight.shape[0]
            special = set(tokenizer.all_special_ids)
            texts = tokenizer.convert_ids_to_tokens(list(range(V)))
            allowed = []
            for i, tok in enumerate(texts):
                if i in special or tok is None:
                    allowed.append(False)
                    continue
                text = tokenizer.convert_tokens_to_string([tok])
                allowed.append(bool(pattern.match(text)) and "\ufffd" not in text)
            self._filter_mask = torch.tensor(allowed, device=self.forward.device)
        return self._filter_mask

    def propose(self, prompt: Sequence[int], pos: int, rng: random.Random) -> list[int]:
        """Candidate tokens for slot ``pos`` from the model's own next-token distribution (phase B)."""
        torch = self.torch
        cfg = self.config
        seqs = [self.text.split(item.input) + list(prompt[:pos]) for item in self.train]
        rows: list = []

        def run(idx):
            with torch.no_grad():
                return self.forward.selected([seqs[i] for i in idx], [[len(seqs[i]) - 1] for i in idx])

        for chunk in self.forward.map_chunks(len(seqs), run):
            rows.extend(t[0] for t in chunk)
        logits = torch.stack(rows)  # [N, V]
        mask = self.token_filter_mask().clone()
        if pos > 0:
            mask[prompt[pos - 1]] = False
        logits = logits.masked_fill(~mask, float("-inf"))
        order = logits.argsort(dim=-1, descending=True)  # [N, V]
        n_allowed = int(mask.sum())
        k = min(cfg.topk, n_allowed)
        current = prompt[pos] if pos < len(prompt) else None
        while True:
            top_sets = [set(order[j, :k].tolist()) for j in range(len(self.train))]
            cands: set[int] = set()
            for _ in range(cfg.topq):
                group = rng.sample(range(len(top_sets)), min(cfg.intersect, len(top_sets)))
                inter = set.intersection(*(top_sets[g] for g in group))
                cands |= inter
            target = cfg.pool if cfg.schedule == "improved" else cfg.min_candidates
            if len(cands) >= target or k >= n_allowed:
                break
            k = min(n_allowed, k + 2)
        result = sorted(cands)
        if current is not None and current not in cands:
            result.append(current)
        return result

    def onehot_loss(self, prompt: Sequence[int], pos: int, cands: list[int], onehot, idx: Sequence[int] | None = None):
        """Summed loss over training examples ``idx`` (default all) with ``onehot`` [C] placed at slot ``pos``.

        loss_j = CE(answer / T) + grad_fluency_weight * mean NLL of the prompt tokens. Differentiable in onehot.
        """
        torch = self.torch
        terms = self.terms
        idx = range(len(self.train)) if idx is None else idx
        chains = self.decoder.chains(prompt)
        cand_t = torch.tensor(cands, device=self.forward.device)
        seqs, positions, answers, slots = [], [], [], []
        for ii in idx:
            seq, p_start, a_start, ans = terms.sequence(self.train[ii], prompt, chains[ii])
            n_ans_rows = terms.answer_rows(ans)
            seqs.append(seq)
            positions.append(
                terms.prompt_positions(p_start, len(prompt)) + list(range(a_start - 1, a_start - 1 + n_ans_rows))
            )
            answers.append(ans)
            slots.append(p_start + pos)
        logits = self.forward.selected(seqs, positions, onehot=onehot, slots=slots, cand_ids=cand_t)
        total = 0
        for lg, ii, ans in zip(logits, idx, answers):
            loss, nll, _ = terms.of(lg, prompt, self.train[ii], ans)
            total = total + loss + self.config.grad_fluency_weight * nll
        return total

    def gradient(self, prompt: Sequence[int], pos: int, cands: list[int], normalize: bool = True):
        """d loss / d one-hot over ``cands`` at slot ``pos`` (phase C). Returns [C] float (L2-normalized)."""
        torch = self.torch
        weight = self.forward.embed.weight
        dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        onehot = torch.zeros(len(cands), device=self.forward.device, dtype=dtype)
        onehot[cands.index(prompt[pos])] = 1.0
        onehot.requires_grad_(True)
        self.decoder.chains(prompt)  # outside the graph

        def run(idx):
            self.onehot_loss(prompt, pos, cands, onehot, idx).backward()

        self.forward.map_chunks(len(self.train), run)
        assert onehot.grad is not None  # (set by backward)
        grad = onehot.grad.detach().clone()
        if not normalize:
            return grad
        norm = grad.norm()
        return grad / norm if float(norm) > 0 else grad
