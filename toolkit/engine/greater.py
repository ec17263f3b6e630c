"""GReaTer: gradient prompt optimization through the model's own reasoning.

See docs/engine.md for the method, each setting, and how the ``improved`` schedule differs from the
``reference`` one. The engine is a generator of step records: it never prints and checks a stop signal
between phases. Tensor helpers are pure functions with their shapes documented.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Iterator, Sequence

from ..errors import ConfigError, OutOfMemoryError
from ..layout import CHAIN_CAP, REASONING_SEPARATOR, ChatLayout, answer_text
from ..tasks import AnswerSpec
from .search import WideSearch

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
    n_dev: int = 50
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
    pair_swaps: int = 6  # improved: after a fruitless sweep, try two-token changes among this many best single swaps
    dev_top: int = 4  # improved: best prompts by training score compared with the starting prompt on dev
    # improved, label tasks: what the training score counts. "balanced": the mean error per gold label (each label
    # weighs the same however many training examples it has, so a prompt cannot gain by answering the majority
    # label); "accuracy": the plain error rate. Number and text tasks always use the error rate.
    objective: str = "balanced"
    alpha: float = 0.05  # improved: significance level of that paired test (Bonferroni over dev_top)

    def __post_init__(self):
        if self.execution not in ("fast", "naive"):
            raise ConfigError(f"Unknown execution {self.execution!r}: use fast or naive.")
        if self.schedule not in ("improved", "reference"):
            raise ConfigError(f"Unknown schedule {self.schedule!r}: use improved or reference.")
        if self.mode not in ("direct", "reasoning"):
            raise ConfigError(f"Unknown mode {self.mode!r}: use direct or reasoning.")
        if self.rank not in ("gradient", "random"):
            raise ConfigError(f"Unknown rank {self.rank!r}: use gradient or random.")
        if self.objective not in ("balanced", "accuracy"):
            raise ConfigError(f"Unknown objective {self.objective!r}: use balanced or accuracy.")
        for name in ("width", "probe", "pair_swaps", "fresh", "n_dev", "dev_every"):
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
    def from_dict(cls, data: dict) -> "GreaterConfig":
        names = {f.name for f in fields(cls)}
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


class GreaterEngine(WideSearch):
    def __init__(
        self,
        tm,
        spec: AnswerSpec,
        train: Sequence[Item],
        dev: Sequence[Item],
        config: GreaterConfig,
        *,
        predict_only: bool = False,
    ):
        """``predict_only``: an engine that only scores and predicts (evaluation on torch, compare) and so needs
        no training examples; searching with it is refused."""
        import torch

        self.torch = torch
        self.tm = tm
        self.model = tm.model
        self.spec = spec
        self.config = config
        self.train = list(train)[: config.n_train]
        self.dev = list(dev)[: config.n_dev]
        self.predict_only = predict_only
        if not self.train and not predict_only:
            raise ConfigError("The task has no training examples.")
        self.layout = ChatLayout(
            tm.chat_template, getattr(tm.tokenizer, "bos_token", "") or "", getattr(tm.tokenizer, "eos_token", "") or ""
        )
        self.device = next(self.model.parameters()).device
        from .torch_backend import prepare_for_gradients

        prepare_for_gradients(self.model)  # bitsandbytes 4-bit on CPU: keep the differentiable matmul
        self.embed = self.model.get_input_embeddings()
        self.base = getattr(self.model, self.model.base_model_prefix)
        self.head = self.model.get_output_embeddings()
        self.softcap = getattr(self.model.config, "final_logit_softcapping", None)
        sep = REASONING_SEPARATOR if config.mode == "reasoning" else ""
        self.extractor_ids = tm.encode(sep + spec.extractor)
        self._after_ids: list[int] | None = None
        self._prefix_cache: dict[str, list[int]] = {}
        self._kv_prefix: dict[tuple, object] = {}
        self._answer_cache: dict[str, list[int]] = {}
        self._chains: dict[tuple, list[list[int]]] = {}
        self._scores: dict[tuple, Score] = {}
        self._filter_mask = None
        self.naive = config.execution == "naive"
        self.batch_size = 1 if self.naive else config.batch_size
        self.stats = {
            "grad_tokens": 0,
            "grad_sequences": 0,
            "forward_tokens": 0,
            "prefix_tokens_reused": 0,
            "raced_out": 0,
            "race_examples_skipped": 0,
        }
        self.events: list[str] = []
        if spec.kind == "label":
            self.label_ids = [tm.encode(answer_text(lab)) for lab in spec.labels]
            firsts = [ids[0] for ids in self.label_ids]
            self.label_first = firsts if len(set(firsts)) == len(firsts) else None
        else:
            self.label_ids, self.label_first = [], None
        self.weights, self.granularity = self._example_weights(self.train)
        self.stop_ids = {i for i in (tm.tokenizer.eos_token_id,) if i is not None}
        for tok in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>"):
            tid = tm.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid != tm.tokenizer.unk_token_id and tid >= 0:
                self.stop_ids.add(tid)

    # ------------------------------------------------------------------ layout pieces

    def _split(self, text: str) -> list[int]:
        if text not in self._prefix_cache:
            before, after = self.layout.split(text)
            self._prefix_cache[text] = self.tm.encode(before)
            if self._after_ids is None:
                self._after_ids = self.tm.encode(after)
        return self._prefix_cache[text]

    @property
    def after_ids(self) -> list[int]:
        if self._after_ids is None:
            self._split(self.train[0].input)
        return self._after_ids

    def _answer_ids(self, answer: str) -> list[int]:
        if answer not in self._answer_cache:
            self._answer_cache[answer] = self.tm.encode(answer_text(answer))
        return self._answer_cache[answer]

    def encode_prompt(self, text: str) -> list[int]:
        return self.tm.encode(text)

    def decode(self, ids) -> str:
        return self.tm.decode(ids)

    # ------------------------------------------------------------------ tensor helpers

    def _forward_selected(
        self, seqs: list[list[int]], positions: list[list[int]], onehot=None, slots=None, cand_ids=None
    ):
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

    MIN_PREFIX = 8  # shorter shared heads are not worth a cache

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

    def _out_of_time(self, stop, t_start: float) -> bool:
        """A stop was asked for, or the time budget is spent: no new step starts."""
        budget = self.config.time_budget_s
        return (stop is not None and stop.is_set()) or (budget is not None and time.perf_counter() - t_start >= budget)

    def _map_chunks(self, n: int, fn) -> list:
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

    # ------------------------------------------------------------------ sequences

    def _sequence(self, item: Item, prompt: Sequence[int], chain: Sequence[int]):
        """Return (ids, prompt_start, answer_start, answer_ids) for one example."""
        before = self._split(item.input)
        head = list(before) + list(prompt) + self.after_ids + list(chain) + self.extractor_ids
        ans = self._answer_ids(item.answer)
        return head + ans, len(before), len(head), ans

    def _prompt_positions(self, p_start: int, n_prompt: int) -> list[int]:
        # logits at position i predict token i+1; prompt token 0 is predicted from p_start - 1
        return list(range(p_start - 1, p_start + n_prompt - 1))

    def _terms(self, logits, prompt_ids: Sequence[int], item: Item, ans: list[int]):
        """(answer loss, prompt NLL, correct) from logits [n_prompt + n_answer_rows, V]."""
        torch = self.torch
        F = torch.nn.functional
        n_prompt = len(prompt_ids)
        p_logits = logits[:n_prompt]
        target = torch.tensor(list(prompt_ids), device=logits.device)
        nll = F.cross_entropy(p_logits, target) if n_prompt else logits.new_zeros(())
        loss, correct = self._answer_terms(logits[n_prompt:], item, ans)
        return loss, nll, correct

    def _answer_terms(self, a_logits, item: Item, ans: list[int]):
        """(answer loss, correct) from the answer rows' logits [n_answer_rows, V]."""
        torch = self.torch
        F = torch.nn.functional
        T = self.config.ce_temperature
        if self._label_fast():
            # Score the answer among the labels (first tokens are distinct).
            lab = a_logits[0, self.label_first]  # [K]
            gold = self.spec.labels.index(item.answer) if item.answer in self.spec.labels else -1
            loss = F.cross_entropy((lab / T).unsqueeze(0), torch.tensor([gold], device=a_logits.device))
            correct = bool(int(lab.argmax()) == gold)
        else:
            gold_ids = torch.tensor(ans, device=a_logits.device)
            loss = F.cross_entropy(a_logits / T, gold_ids)
            correct = bool((a_logits.argmax(-1) == gold_ids).all())
        return loss, correct

    def _logits_of(self, hidden):
        """Logits (float32, soft-capped where the model does) from hidden states [..., D]."""
        torch = self.torch
        out = self.head(hidden)
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out

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
            chains = self.chains(prompt, items) if self.config.mode == "reasoning" else [[] for _ in items]
        tails = [prompt[pos + 1 :] + self.after_ids + list(ch) + self.extractor_ids for ch in chains]
        label_fast = self._label_fast()
        pad_id = self._pad_id()
        dev = self.device
        C = len(cands)
        cand_t = torch.tensor(list(cands), device=dev)
        out: list[list[tuple]] = [[None] * len(items) for _ in range(C)]

        def run(idx):
            prefixes = [self._split(items[j].input) + prompt[:pos] for j in idx]
            starts = [len(self._split(items[j].input)) for j in idx]
            B, L = len(idx), max(len(x) for x in prefixes)
            ids = torch.full((B, L), pad_id, dtype=torch.long, device=dev)
            mask = torch.zeros((B, L), dtype=torch.long, device=dev)
            for b, x in enumerate(prefixes):
                ids[b, L - len(x) :] = torch.tensor(x, device=dev)
                mask[b, L - len(x) :] = 1
            cache = DynamicCache(config=self.model.config)
            with torch.no_grad():
                hidden = self.base(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    past_key_values=cache,
                    use_cache=True,
                ).last_hidden_state
                self.stats["forward_tokens"] += int(mask.sum())
                fixed_nll, slot_lsm = [], []
                for b in range(B):
                    off = L - len(prefixes[b])
                    rows = [off + r for r in self._prompt_positions(starts[b], n_p)[:pos]]
                    if rows:
                        lg = self._logits_of(hidden[b, rows])
                        fixed_nll.append(F.cross_entropy(lg, torch.tensor(prompt[:pos], device=dev), reduction="sum"))
                    else:
                        fixed_nll.append(hidden.new_zeros((), dtype=torch.float32))
                    slot_lsm.append(torch.log_softmax(self._logits_of(hidden[b, L - 1]), dim=-1))  # predicts the slot
                lengths = mask.sum(-1)
                answers = [self._answer_ids(items[j].answer) for j in idx]
                n_ans_rows = [1 if label_fast else len(a) for a in answers]
                bodies = [tails[j] + ([] if label_fast else answers[b]) for b, j in enumerate(idx)]
                W = 1 + max(len(x) for x in bodies)
                group = max(1, (4 * max(1, self.batch_size)) // B)  # rows per suffix pass ~ 4 x batch size
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
                    hs = self.base(
                        input_ids=feed,
                        attention_mask=full_mask,
                        position_ids=position_ids,
                        past_key_values=rows_cache,
                        use_cache=True,
                    ).last_hidden_state  # [B*G, W, D]
                    self.stats["forward_tokens"] += int(block.sum())
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
                    logits = self._logits_of(hs[torch.tensor(rows_r, device=dev), torch.tensor(rows_c, device=dev)])
                    if n_rest:
                        rest_t = torch.tensor(prompt[pos + 1 :], device=dev)
                    for b, j in enumerate(idx):
                        for g, c in enumerate(gc):
                            start = spans[b * G + g]
                            nll = fixed_nll[b] - slot_lsm[b][cands[c]]
                            if n_rest:
                                nll = nll + F.cross_entropy(logits[start : start + n_rest], rest_t, reduction="sum")
                            a_logits = logits[start + n_rest : start + n_rest + n_ans_rows[b]]
                            loss, correct = self._answer_terms(a_logits, items[j], answers[b])
                            out[c][j] = (loss, nll / n_p, correct)
            return None

        self._map_chunks(len(items), run)
        return out

    # ------------------------------------------------------------------ phases

    def chains(self, prompt: Sequence[int], items: Sequence[Item] | None = None) -> list[list[int]]:
        """Greedy reasoning chains for ``items`` (default: train) under ``prompt``; cached by prompt."""
        items = self.train if items is None else items
        if self.config.mode == "direct":
            return [[] for _ in items]
        key = self._chain_key(prompt, items)
        if key in self._chains and not self.naive:
            return self._chains[key]
        out = self._generate_chains(prompt, items)
        if not self.naive:
            self._chains[key] = out
        return out

    def _pad_id(self) -> int:
        pad_id = self.tm.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = next(iter(self.stop_ids)) if self.stop_ids else 0
        return pad_id

    def _chain_key(self, prompt: Sequence[int], items: Sequence[Item]) -> tuple:
        # By content: an id() of a temporary list can be reused by another list after it is freed.
        return (tuple(prompt), 0 if items is self.train else tuple(item.input for item in items))

    def _generate_chains(self, prompt: Sequence[int], items: Sequence[Item]) -> list[list[int]]:
        """Greedy decoding of ``items`` under ``prompt`` (no cache), batched by the batch size."""
        return self._generate_pairs([(prompt, item) for item in items])

    def _generate_pairs(self, pairs: Sequence[tuple[Sequence[int], Item]]) -> list[list[int]]:
        """Greedy chains for (prompt, item) pairs, any mix of prompts in one batch."""
        if self.config.mode == "direct":
            return [[] for _ in pairs]
        out: list[list[int]] = []

        def run_chunk(idx):
            seqs = [self._split(pairs[i][1].input) + list(pairs[i][0]) + self.after_ids for i in idx]
            return self._greedy(seqs, self.config.max_new_tokens)

        for chunk in self._map_chunks(len(pairs), run_chunk):
            out.extend(chunk)
        return out

    def _greedy(self, seqs: list[list[int]], max_new: int, make_processor=None) -> list[list[int]]:
        """Greedy continuations of ``seqs`` (one left-padded batch), each cut at its first stop token.
        ``make_processor(L)``, if given, returns a logits processor for prompts padded to length L."""
        torch = self.torch
        pad_id = self._pad_id()
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
                eos_token_id=sorted(self.stop_ids) or None,
                **extra,
            )
        res = []
        for row in gen[:, L:].tolist():
            out = []
            for t in row:
                if t in self.stop_ids:
                    break
                out.append(t)
            res.append(out)
        return res

    def _item_terms(self, triples: Sequence[tuple[Sequence[int], Item, list[int]]]):
        """[(loss, nll, correct)] per (prompt, item, chain): the scoring forward, batched across prompts."""
        torch = self.torch
        jobs = []
        for prompt, item, chain in triples:
            seq, p_start, a_start, ans = self._sequence(item, prompt, chain)
            n_ans_rows = 1 if self._label_fast() else len(ans)
            pos = self._prompt_positions(p_start, len(prompt)) + list(range(a_start - 1, a_start - 1 + n_ans_rows))
            jobs.append((seq, pos, ans))

        def run(idx):
            with torch.no_grad():
                logits = self._forward_selected([jobs[i][0] for i in idx], [jobs[i][1] for i in idx])
            return [self._terms(lg, triples[i][0], triples[i][1], jobs[i][2]) for lg, i in zip(logits, idx)]

        return [t for chunk in self._map_chunks(len(jobs), run) for t in chunk]

    def _chains_and_terms(self, pairs: Sequence[tuple[Sequence[int], Item]]):
        """Chains and (loss, nll, correct) for (prompt, item) pairs in one pass per batch (reasoning mode)."""
        chains, terms, _ = self._chains_terms_labels(pairs)
        return chains, terms

    def _chains_terms_labels(self, pairs: Sequence[tuple[Sequence[int], Item]]):
        """Chains, (loss, nll, correct) and, when the labels' first tokens differ, the predicted label, for
        (prompt, item) pairs in one pass per batch (reasoning mode).

        Prefill [input, prompt, end of turn] (left-padded), read the prompt-token logits from it, decode
        greedily with the KV cache, then feed only [last chain token, extractor, answer] on top of that cache.
        The same numbers as decoding with ``generate`` and re-forwarding the whole sequence, without the
        second forward.
        """
        torch = self.torch
        pad_id = self._pad_id()
        max_new = self.config.max_new_tokens
        logits_of = self._logits_of

        def run_chunk(idx):
            from transformers import DynamicCache

            heads, starts = [], []
            for i in idx:
                prompt, item = pairs[i]
                before = self._split(item.input)
                heads.append(before + list(prompt) + self.after_ids)
                starts.append(len(before))
            B, L = len(idx), max(len(h) for h in heads)
            dev = self.device
            ids = torch.full((B, L), pad_id, dtype=torch.long, device=dev)
            mask = torch.zeros((B, L), dtype=torch.long, device=dev)
            for b, h in enumerate(heads):
                ids[b, L - len(h) :] = torch.tensor(h, device=dev)
                mask[b, L - len(h) :] = 1
            cache = DynamicCache(config=self.model.config)  # sliding-window layers (Gemma) as generate builds them
            with torch.no_grad():
                hidden = self.base(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    past_key_values=cache,
                    use_cache=True,
                ).last_hidden_state
                self.stats["forward_tokens"] += int(mask.sum())
                prompt_logits = []
                for b, i in enumerate(idx):
                    off, n_p = L - len(heads[b]), len(pairs[i][0])
                    rows = [off + p for p in self._prompt_positions(starts[b], n_p)]
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
                        if nxt[b] in self.stop_ids:
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
                    out = self.base(
                        input_ids=torch.tensor(feed, device=dev).unsqueeze(1),
                        attention_mask=mask,
                        position_ids=pos,
                        past_key_values=cache,
                        use_cache=True,
                    ).last_hidden_state
                    self.stats["forward_tokens"] += sum(live)
                    for b in range(B):
                        if live[b]:
                            lengths[b] += 1
                            unfed[b] = False
                    nxt = logits_of(out[:, -1]).argmax(-1).tolist()
                # The extractor and the answer on top of each row's cache.
                blocks, answers = [], []
                for b, i in enumerate(idx):
                    ans = self._answer_ids(pairs[i][1].answer)
                    answers.append(ans)
                    blocks.append(([chains[b][-1]] if unfed[b] else []) + self.extractor_ids + ans)
                W = max(len(x) for x in blocks)
                feed = torch.full((B, W), pad_id, dtype=torch.long, device=dev)
                block_mask = torch.zeros((B, W), dtype=torch.long, device=dev)
                for b, blk in enumerate(blocks):
                    feed[b, : len(blk)] = torch.tensor(blk, device=dev)
                    block_mask[b, : len(blk)] = 1
                pos = torch.tensor(lengths, device=dev).unsqueeze(1) + torch.arange(W, device=dev).unsqueeze(0)
                out = self.base(
                    input_ids=feed,
                    attention_mask=torch.cat([mask, block_mask], dim=1),
                    position_ids=pos,
                    past_key_values=cache,
                    use_cache=True,
                ).last_hidden_state
                self.stats["forward_tokens"] += int(block_mask.sum())
                results = []
                for b, i in enumerate(idx):
                    n_rows = 1 if self._label_fast() else len(answers[b])
                    first = len(blocks[b]) - len(answers[b]) - 1  # predicts the first answer token
                    ans_logits = logits_of(out[b, first : first + n_rows])
                    logits = torch.cat([prompt_logits[b], ans_logits], dim=0)
                    label = (
                        self.spec.labels[int(ans_logits[0, self.label_first].argmax())]
                        if self.label_first is not None
                        else None
                    )
                    results.append((chains[b], self._terms(logits, pairs[i][0], pairs[i][1], answers[b]), label))
            return results

        flat = [r for chunk in self._map_chunks(len(pairs), run_chunk) for r in chunk]
        return [c for c, _, _ in flat], [t for _, t, _ in flat], [lab for _, _, lab in flat]

    def _example_weights(self, items: Sequence[Item]) -> tuple[list[float], float]:
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
        """The training error is weighted per gold label (see :meth:`_example_weights`)."""
        return self.granularity != 1.0 / max(1, len(self.train))

    def _score_of(self, rows, items: Sequence[Item]) -> "Score":
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
            value=self._score_value(1 - err, nll, loss, n, granularity=granularity),
            accuracy=correct / n,
            loss=loss,
            fluency_nll=nll,
            n=n,
            objective_accuracy=1 - err,
        )

    def _score_value(self, accuracy: float, nll: float, loss: float, n: int, granularity: float | None = None) -> float:
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
        acc = {
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
                chains, terms = self._chains_and_terms(pairs)
            else:
                chains = self._generate_pairs(pairs)
                terms = self._item_terms([(k, item, ch) for (k, item), ch in zip(pairs, chains)])
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
                    self.stats["raced_out"] += 1
                    self.stats["race_examples_skipped"] += n - seen
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
            self._scores[k] = self._score_of(a["terms"], self.train)
            if self.config.mode == "reasoning":
                self._chains[(k, 0)] = a["chains"]
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
                and self._chain_key(p, items) not in self._chains
            ]
            by_prompt: dict[tuple, list] = {}
            if fresh:
                chains, fresh_terms = self._chains_and_terms([(p, item) for p in fresh for item in items])
                for fi, p in enumerate(fresh):
                    self._chains[self._chain_key(p, items)] = chains[fi * n : (fi + 1) * n]
                    by_prompt[p] = fresh_terms[fi * n : (fi + 1) * n]
            rest = [p for p in todo if p not in by_prompt]
            if rest:
                triples = [(p, item, chain) for p in rest for item, chain in zip(items, self.chains(p, items))]
                rest_terms = self._item_terms(triples)
                for ri, p in enumerate(rest):
                    by_prompt[p] = rest_terms[ri * n : (ri + 1) * n]
            terms = [t for p in todo for t in by_prompt[p]]
            for pi, p in enumerate(todo):
                results[p] = self._score_of(terms[pi * n : (pi + 1) * n], items)  # summed as racing does
                if cacheable:
                    self._scores[p] = results[p]
        return [self._scores[tuple(p)] if cacheable else results[tuple(p)] for p in prompts]

    def predict_items(
        self, prompt: Sequence[int], items: Sequence[Item], answer_tokens: int = 16
    ) -> list[tuple[bool, str | None]]:
        """(correct, predicted answer) per item under ``prompt``: the torch side of an evaluation.

        The llama.cpp evaluator's rules (:mod:`toolkit.evaluate`), so the two runtimes are comparable: labels
        by the first answer token when the labels' first tokens differ, else by whole-label log-probability;
        numbers and free text by greedy generation held to the same shapes as the llama.cpp grammar (a number;
        one line), at most ``answer_tokens`` tokens, compared after the same normalization.
        """
        from ..evaluate import is_correct

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
        chains = self.chains(prompt, items)
        heads = [
            self._split(item.input) + list(prompt) + self.after_ids + list(chain) + self.extractor_ids
            for item, chain in zip(items, chains)
        ]
        if self.spec.kind == "label":
            preds = self._choose_labels(heads)
        else:
            preds = self._generate_answers(heads, answer_tokens)
        return [(is_correct(pred, item.answer, self.spec.kind), pred) for item, pred in zip(items, preds)]

    def _choose_labels(self, heads: list[list[int]]) -> list[str]:
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
            return [labels[int(lg[0, self.label_first].argmax())] for lg in logits]
        out = []
        for e in range(len(heads)):
            scores = []
            for k, ids in enumerate(label_ids):
                lp = torch.log_softmax(logits[e * len(labels) + k].double(), dim=-1)
                rows, cols = torch.arange(len(ids), device=lp.device), torch.tensor(ids, device=lp.device)
                scores.append(float(lp[rows, cols].sum()))
            out.append(labels[max(range(len(labels)), key=scores.__getitem__)])
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

        from ..evaluate import answer_complete, answer_from_text, answer_prefix_ok

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

    def token_filter_mask(self):
        """[V] bool: tokens the filter allows as prompt tokens."""
        if self._filter_mask is None:
            torch = self.torch
            pattern = re.compile(self.config.token_filter)
            V = self.head.weight.shape[0]
            special = set(self.tm.tokenizer.all_special_ids)
            texts = self.tm.tokenizer.convert_ids_to_tokens(list(range(V)))
            allowed = []
            for i, tok in enumerate(texts):
                if i in special or tok is None:
                    allowed.append(False)
                    continue
                text = self.tm.tokenizer.convert_tokens_to_string([tok])
                allowed.append(bool(pattern.match(text)) and "\ufffd" not in text)
            self._filter_mask = torch.tensor(allowed, device=self.device)
        return self._filter_mask

    def propose(self, prompt: Sequence[int], pos: int, rng: random.Random) -> list[int]:
        """Candidate tokens for slot ``pos`` from the model's own next-token distribution (phase B)."""
        torch = self.torch
        seqs = [self._split(item.input) + list(prompt[:pos]) for item in self.train]
        rows: list = []

        def run(idx):
            with torch.no_grad():
                return self._forward_selected([seqs[i] for i in idx], [[len(seqs[i]) - 1] for i in idx])

        for chunk in self._map_chunks(len(seqs), run):
            rows.extend(t[0] for t in chunk)
        logits = torch.stack(rows)  # [N, V]
        mask = self.token_filter_mask().clone()
        if pos > 0:
            mask[prompt[pos - 1]] = False
        logits = logits.masked_fill(~mask, float("-inf"))
        order = logits.argsort(dim=-1, descending=True)  # [N, V]
        n_allowed = int(mask.sum())
        k = min(self.config.topk, n_allowed)
        current = prompt[pos] if pos < len(prompt) else None
        while True:
            top_sets = [set(order[j, :k].tolist()) for j in range(len(self.train))]
            cands: set[int] = set()
            for _ in range(self.config.topq):
                group = rng.sample(range(len(top_sets)), min(self.config.intersect, len(top_sets)))
                inter = set.intersection(*(top_sets[g] for g in group))
                cands |= inter
            target = self.config.pool if self.config.schedule == "improved" else self.config.min_candidates
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
        idx = range(len(self.train)) if idx is None else idx
        chains = self.chains(prompt)
        cand_t = torch.tensor(cands, device=self.device)
        seqs, positions, answers, slots = [], [], [], []
        for ii in idx:
            seq, p_start, a_start, ans = self._sequence(self.train[ii], prompt, chains[ii])
            n_ans_rows = 1 if self._label_fast() else len(ans)
            seqs.append(seq)
            positions.append(
                self._prompt_positions(p_start, len(prompt)) + list(range(a_start - 1, a_start - 1 + n_ans_rows))
            )
            answers.append(ans)
            slots.append(p_start + pos)
        logits = self._forward_selected(seqs, positions, onehot=onehot, slots=slots, cand_ids=cand_t)
        total = 0
        for lg, ii, ans in zip(logits, idx, answers):
            loss, nll, _ = self._terms(lg, prompt, self.train[ii], ans)
            total = total + loss + self.config.grad_fluency_weight * nll
        return total

    def gradient(self, prompt: Sequence[int], pos: int, cands: list[int], normalize: bool = True):
        """d loss / d one-hot over ``cands`` at slot ``pos`` (phase C). Returns [C] float (L2-normalized)."""
        torch = self.torch
        dtype = torch.float64 if self.embed.weight.dtype == torch.float64 else torch.float32
        onehot = torch.zeros(len(cands), device=self.device, dtype=dtype)
        onehot[cands.index(prompt[pos])] = 1.0
        onehot.requires_grad_(True)
        self.chains(prompt)  # outside the graph

        def run(idx):
            self.onehot_loss(prompt, pos, cands, onehot, idx).backward()

        self._map_chunks(len(self.train), run)
        grad = onehot.grad.detach().clone()
        if not normalize:
            return grad
        norm = grad.norm()
        return grad / norm if float(norm) > 0 else grad

    # ------------------------------------------------------------------ the loop

    def initial_state(self, prompt_text: str) -> dict:
        ids = self.encode_prompt(prompt_text)
        if not ids:
            raise ConfigError("The initial prompt is empty.")
        return {
            "prompt_ids": ids,
            "pos": 0,
            "step": 0,
            "visited": [],
            "top": [],
            "initial_len": len(ids),
            "initial_ids": list(ids),
        }

    def run(self, state: dict, stop: threading.Event | None = None) -> Iterator[dict]:
        """Optimize from ``state`` (see :meth:`initial_state`), yielding one record per step.

        Each record carries ``state``: pass it back to continue exactly where the run stopped.
        """
        if self.predict_only:
            raise ConfigError("This engine was made to predict only (no training examples); it cannot search.")
        if self.config.schedule == "improved":
            return self._run_improved(state, stop)
        return self._run_reference(state, stop)

    def _run_reference(self, state: dict, stop: threading.Event | None = None) -> Iterator[dict]:
        """The published schedule (see docs/engine.md): the gradient's top ``n_grad_candidates``, one position
        per step, left to right."""
        cfg = self.config
        torch = self.torch
        torch.manual_seed(cfg.seed)
        state = {
            **state,
            "prompt_ids": list(state["prompt_ids"]),
            "visited": list(state["visited"]),
            "top": [list(t) for t in state["top"]],
        }
        placeholder = self.tm.encode(" _")[-1]
        t_start = time.perf_counter()
        while state["step"] < cfg.steps:
            if self._out_of_time(stop, t_start):
                return
            step = state["step"]
            rng = random.Random(f"{cfg.seed}-{step}")
            prompt = state["prompt_ids"]
            pos = state["pos"]
            grown = False
            if pos >= len(prompt):
                prompt = prompt + [placeholder]
                grown = True
            timings: dict[str, float] = {}
            t0 = time.perf_counter()
            current_score = self.score_prompts([prompt])[0] if not grown else None
            timings["reasoning_and_current"] = time.perf_counter() - t0
            if stop is not None and stop.is_set():
                return
            t0 = time.perf_counter()
            cands = self.propose(prompt, pos, rng)
            timings["proposal"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            grad = self.gradient(prompt, pos, cands)
            timings["gradient"] = time.perf_counter() - t0
            if stop is not None and stop.is_set():
                return
            ranked = sorted(range(len(cands)), key=lambda i: (float(grad[i]), cands[i]))
            chosen_idx = ranked[: cfg.n_grad_candidates]  # the current token is compared only if ranked here
            trial_prompts = []
            for i in chosen_idx:
                p = list(prompt)
                p[pos] = cands[i]
                trial_prompts.append(p)
            t0 = time.perf_counter()
            scores = self.score_prompts(trial_prompts) if trial_prompts else []
            timings["scoring"] = time.perf_counter() - t0

            candidates = [
                {
                    "token": cands[i],
                    "text": self.decode([cands[i]]),
                    "grad": float(grad[i]),
                    "score": s.value,
                    "accuracy": s.accuracy,
                    "loss": s.loss,
                    "nll": s.fluency_nll,
                    **({"raced_after": s.seen} if s.raced else {}),
                }
                for i, s in zip(chosen_idx, scores)
            ]
            # Choose.
            options = list(zip(trial_prompts, scores, [c["token"] for c in candidates]))
            new_prompt, new_score = prompt, current_score
            if options:  # the best candidate replaces the token even when it is worse (the reference's rule)
                early = None
                if pos >= state["initial_len"] // 2:
                    early = next((o for o in options if "." in self.decode([o[2]])), None)
                best = early or min(options, key=lambda o: o[1].value)
                new_prompt, new_score = best[0], best[1]
            chosen_tok = new_prompt[pos] if pos < len(new_prompt) else None
            accepted = new_prompt != prompt
            # Position schedule.
            next_pos = pos + 1
            chosen_text = self.decode([chosen_tok]) if chosen_tok is not None else ""
            if next_pos >= len(new_prompt):
                if "." in chosen_text or len(new_prompt) >= cfg.max_prompt_tokens:
                    next_pos = 0
                # else: next step appends a placeholder and optimizes it
            key = f"{next_pos}:{','.join(map(str, new_prompt))}"
            state["visited"] = (state["visited"] + [key])[-200:]
            # Top-k bookkeeping (distinct prompts).
            top = [t for t in state["top"] if t[1] != new_prompt] + [[new_score.value, list(new_prompt)]]
            if current_score is not None and all(t[1] != prompt for t in top):
                top.append([current_score.value, list(prompt)])
            top.sort(key=lambda t: t[0])
            state["top"] = top[: cfg.top_keep]
            dev_accuracy = None
            if cfg.dev_every > 0 and self.dev and (step + 1) % cfg.dev_every == 0:
                t0 = time.perf_counter()  # progress only: dev scores never steer the search
                dev_accuracy = self.score_prompts([new_prompt], items=self.dev)[0].accuracy
                timings["dev"] = time.perf_counter() - t0
            before_text = self.decode(state["prompt_ids"])
            state.update(prompt_ids=list(new_prompt), pos=next_pos, step=step + 1)
            record = {
                "step": step,
                "position": pos,
                "prompt_before": before_text,
                "prompt_after": self.decode(new_prompt),
                "prompt_ids": list(new_prompt),
                "chosen_token": chosen_text,
                "accepted": accepted,
                "grown": grown and len(new_prompt) == len(prompt),
                "stuck": False,
                "candidates": candidates,
                "proposed": len(cands),
                "train_score": new_score.value,
                "train_accuracy": new_score.accuracy,
                "dev_accuracy": dev_accuracy,
                "timings": timings,
                "events": list(self.events),
                "state": dict(state),
            }
            self.events.clear()
            yield record

    def finish(self, state: dict) -> RunResult:
        """Pick the final prompt. improved: a paired dev test against the starting prompt (see
        :meth:`_finish_improved`); reference: best dev accuracy among the top prompts (train score breaks ties)."""
        if self.config.schedule == "improved":
            return self._finish_improved(state)
        top = state["top"] or [[self.score_prompts([state["prompt_ids"]])[0].value, state["prompt_ids"]]]
        best_ids, best_dev, table = top[0][1], None, []
        if self.config.select_on_dev and self.dev:
            dev_scores = self.score_prompts([t[1] for t in top], items=self.dev)
            for (train_value, ids), ds in zip(top, dev_scores):
                table.append({"prompt": self.decode(ids), "train_score": train_value, "dev_accuracy": ds.accuracy})
            best_i = min(range(len(top)), key=lambda i: (-dev_scores[i].accuracy, top[i][0]))
            best_ids, best_dev = top[best_i][1], dev_scores[best_i].accuracy
        else:
            table = [{"prompt": self.decode(ids), "train_score": v, "dev_accuracy": None} for v, ids in top]
        return RunResult(
            prompt=self.decode(best_ids),
            prompt_ids=list(best_ids),
            train=self.score_prompts([best_ids])[0],
            dev_accuracy=best_dev,
            top=table,
            steps_done=state["step"],
        )
