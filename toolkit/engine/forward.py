"""Forward passes of the GReaTer engine: batched, right-padded forwards that return logits only at the positions
asked for, a shared-prefix KV cache, chunking with out-of-memory halving, and greedy decoding.

:class:`Forward` owns the model and its counters (tokens computed, prefix tokens reused, out-of-memory events);
it knows nothing of prompts or tasks."""

from __future__ import annotations

from typing import Any

from ..errors import OutOfMemoryError
from .config import GreaterConfig


class Forward:
    """The model's forward passes, batched by ``batch_size`` (halved on out-of-memory)."""

    MIN_PREFIX = 8  # shorter shared heads are not worth a cache

    def __init__(self, model, config: GreaterConfig):
        import torch

        from .torch_backend import prepare_for_gradients

        self.torch = torch
        self.model = model
        self.config = config
        prepare_for_gradients(model)  # bitsandbytes 4-bit on CPU: keep the differentiable matmul
        self.device = next(model.parameters()).device
        self.embed = model.get_input_embeddings()
        self.base = getattr(model, model.base_model_prefix)
        self.head = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        self.naive = config.execution == "naive"
        self.batch_size = 1 if self.naive else config.batch_size
        self._kv_prefix: dict[tuple, Any] = {}  # a transformers Cache
        self.stats = {
            "grad_tokens": 0,
            "grad_sequences": 0,
            "forward_tokens": 0,
            "prefix_tokens_reused": 0,
            "raced_out": 0,
            "race_examples_skipped": 0,
        }
        self.events: list[str] = []  # what the next step record reports (out of memory, ...)

    def selected(self, seqs: list[list[int]], positions: list[list[int]], onehot=None, slots=None, cand_ids=None):
        """Run the model on right-padded ``seqs`` and return logits only at ``positions``.

        seqs: B lists of token ids; positions: B lists of indices whose next-token logits are wanted.
        onehot: [C] float (requires grad) placed at ``slots[b]`` of each sequence as onehot @ E[cand_ids].
        Returns a list of B tensors [len(positions[b]), V] (float32).
        """
        torch = self.torch
        B, L = len(seqs), max(len(s) for s in seqs)
        pad = 0
        ids = torch.full((B, L), pad, dtype=torch.long, device=self.device)
        mask = torch.zeros((B, L), dtype=torch.long, device=self.device)
        for b, s in enumerate(seqs):
            ids[b, : len(s)] = torch.tensor(s, device=self.device)
            mask[b, : len(s)] = 1
        embeds = self.embed(ids)
        if onehot is not None:
            slot_embed = (onehot.to(embeds.dtype) @ self.embed.weight[cand_ids]).unsqueeze(0)  # [1, D]
            rows = torch.arange(B, device=self.device)
            cols = torch.tensor(slots, device=self.device)
            sel = torch.zeros((B, L, 1), dtype=embeds.dtype, device=self.device)
            sel[rows, cols] = 1
            embeds = embeds * (1 - sel) + sel * slot_embed.unsqueeze(0)
        flat_b = torch.tensor([b for b, pos in enumerate(positions) for _ in pos], device=self.device)
        flat_p = torch.tensor([p for pos in positions for p in pos], device=self.device)
        if self.naive:  # full [B, L, V] logits, then pick, as the reference does
            self._count(seqs, B, 0, onehot is not None)
            logits = self.model(inputs_embeds=embeds, attention_mask=mask).logits[flat_b, flat_p]
        else:
            P = self._shared_prefix_len(seqs, positions, slots)
            self._count(seqs, B, P, onehot is not None)
            if P > 0:  # the shared head (chat header, system message) is computed once and reused
                past = self._prefix_cache_for(seqs[0][:P], B)
                self.stats["prefix_tokens_reused"] += P * B
                suffix = self.base(
                    inputs_embeds=embeds[:, P:],
                    attention_mask=mask,
                    past_key_values=past,
                    position_ids=torch.arange(P, L, device=self.device).unsqueeze(0).expand(B, -1),
                    use_cache=True,
                ).last_hidden_state  # [B, L - P, D]
                logits = self.head(suffix[flat_b, flat_p - P])
            else:
                hidden = self.base(inputs_embeds=embeds, attention_mask=mask).last_hidden_state  # [B, L, D]
                logits = self.head(hidden[flat_b, flat_p])  # [sum(len(pos)), V]
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        if self.softcap and not self.naive:  # the full model forward already applies it
            logits = torch.tanh(logits / self.softcap) * self.softcap
        out, start = [], 0
        for pos in positions:
            out.append(logits[start : start + len(pos)])
            start += len(pos)
        return out

    def _count(self, seqs, B: int, P: int, grad: bool) -> None:
        """Token positions actually computed (a reused prefix is not), for the FLOP accounting."""
        n = sum(len(s) for s in seqs) - P * B
        self.stats["forward_tokens"] += n
        if grad:
            self.stats["grad_tokens"] += n
            self.stats["grad_sequences"] += B

    def _shared_prefix_len(self, seqs, positions, slots) -> int:
        """Tokens shared by every sequence before the first position anything is read or changed at."""
        if not self.config.prefix_cache or len(seqs) < 2:
            return 0
        first = seqs[0]
        limit = min(min(p) for p in positions if p)
        if slots:
            limit = min(limit, min(slots))
        n = 0
        while n < limit and all(len(s) > n and s[n] == first[n] for s in seqs):
            n += 1
        return n if n >= self.MIN_PREFIX else 0

    def _prefix_cache_for(self, prefix: list[int], batch: int):
        """A fresh KV cache of ``prefix`` repeated ``batch`` times (the prefix forward runs once per prefix)."""
        import copy

        torch = self.torch
        key = tuple(prefix)
        if key not in self._kv_prefix:
            with torch.no_grad():
                ids = torch.tensor([prefix], device=self.device)
                self._kv_prefix.clear()  # keep one: the chat head is the same for every example
                self._kv_prefix[key] = self.base(input_ids=ids, use_cache=True).past_key_values
        cache = copy.deepcopy(self._kv_prefix[key])
        cache.batch_repeat_interleave(batch)
        return cache

    def map_chunks(self, n: int, fn) -> list:
        """Call ``fn(indices)`` over ``range(n)`` in chunks of the batch size; returns the results in order.

        On out-of-memory the batch size is halved (and the change reported in ``events``) and the failed chunk
        is split and run again, so the results do not change.
        """
        torch = self.torch
        results, start = [], 0
        while start < n:
            idx = list(range(start, min(n, start + max(1, self.batch_size))))
            try:
                results.append(fn(idx))
            except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as exc:
                if isinstance(exc, RuntimeError) and "out of memory" not in str(exc).lower():
                    raise
                if self.batch_size <= 1:
                    raise OutOfMemoryError(
                        "Out of memory even at batch size 1. Use a smaller model, 4bit/8bit precision, "
                        "a lower --max-new-tokens, or fewer training examples."
                    ) from exc
                self.batch_size = max(1, min(self.batch_size, len(idx)) // 2)
                self.events.append(f"out of memory: batch size lowered to {self.batch_size}")
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start += len(idx)
        return results

    def logits_of(self, hidden):
        """Logits (float32, soft-capped where the model does) from hidden states [..., D]."""
        torch = self.torch
        out = self.head(hidden)
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out

    def greedy(
        self, seqs: list[list[int]], max_new: int, pad_id: int, stop_ids: set[int], make_processor=None
    ) -> list[list[int]]:
        """Greedy continuations of ``seqs`` (one left-padded batch), each cut at its first stop token.
        ``make_processor(L)``, if given, returns a logits processor for prompts padded to length L."""
        torch = self.torch
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), pad_id, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(ids)
        for b, s in enumerate(seqs):  # left padding for generation
            ids[b, L - len(s) :] = torch.tensor(s, device=self.device)
            mask[b, L - len(s) :] = 1
        extra = {}
        if make_processor is not None:
            from transformers import LogitsProcessorList

            extra["logits_processor"] = LogitsProcessorList([make_processor(L)])
        with torch.no_grad():
            gen = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new,
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=sorted(stop_ids) or None,
                **extra,
            )
        res = []
        for row in gen[:, L:].tolist():
            out = []
            for t in row:
                if t in stop_ids:
                    break
                out.append(t)
            res.append(out)
        return res
