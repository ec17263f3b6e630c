"""GReaTer: gradient prompt optimization through the model's own reasoning.

See docs/engine.md for the method, each setting, and how the ``improved`` schedule differs from the
``reference`` one. The engine is a generator of step records: it never prints and checks a stop signal
between phases. Tensor helpers are pure functions with their shapes documented.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import cast

from ..errors import ConfigError
from ..layout import REASONING_SEPARATOR, ChatLayout, answer_text
from ..tasks import AnswerSpec
from .config import REFERENCE_TOKEN_FILTER, GreaterConfig, Item, RunResult, Score, StepRecord, _flag  # noqa: F401  (re-exported)
from .decode import Decoding
from .final import FinalChoice
from .forward import ForwardPasses
from .predict import Prediction
from .scoring import Scoring
from .search import WideSearch


class GreaterEngine(WideSearch, FinalChoice, Scoring, Decoding, Prediction, ForwardPasses):
    """The GReaTer engine on one model and task. This module keeps its construction, the layout pieces, the
    proposal (the model's own next-token candidates), the gradient through the one-hot slot, and the two
    schedules (``_run_reference``; the improved one is :meth:`WideSearch._run_improved`); forward passes,
    scoring, chains and prediction are the mixins of :mod:`.forward`, :mod:`.scoring`, :mod:`.decode` and
    :mod:`.predict`."""

    def __init__(
        self,
        tm,
        spec: AnswerSpec,
        train: Sequence[Item],
        dev: Sequence[Item],
        config: GreaterConfig,
        *,
        predict_only: bool = False,
        demos: Sequence[tuple[str, str]] = (),
    ):
        """``predict_only``: an engine that only scores and predicts (evaluation on torch, compare) and so needs
        no training examples; searching with it is refused. ``demos``: (input, answer) pairs shown before every
        example (a prompt version's demonstrations). The training rows beyond ``n_train`` are the pool that
        demonstration sets are drawn from (never the rows they are scored on)."""
        import torch

        self.torch = torch
        self.tm = tm
        self.model = tm.model
        self.spec = spec
        self.config = config
        self.train = list(train)[: config.n_train]
        self.pool = list(train)[config.n_train :]
        self.dev = list(dev)[: config.n_dev]
        self.predict_only = predict_only
        if not self.train and not predict_only:
            raise ConfigError("The task has no training examples.")
        if config.search in ("calibration", "demonstrations") and config.schedule != "improved":
            raise ConfigError(f"--search {config.search} needs the improved schedule.")
        if config.search == "calibration" and spec.kind != "label":
            raise ConfigError(
                f"--search calibration applies to label tasks (this task's answers are {spec.kind}s): use --search "
                "instruction or demonstrations."
            )
        self.layout = ChatLayout(
            tm.chat_template, getattr(tm.tokenizer, "bos_token", "") or "", getattr(tm.tokenizer, "eos_token", "") or ""
        )
        if demos:
            self.layout = self.layout.with_demos(tuple(tuple(d) for d in demos), spec.extractor)
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
        self.demo_stats: dict = {}  # the final choice's demonstration search: sets scored, seconds
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

    # The prompt's first character, standing in for any prompt that starts with a visible character when the
    # text before a prompt is tokenized (see :meth:`_split`).
    PROMPT_ANCHOR = "A"

    def _split(self, text: str) -> list[int]:
        """The tokens before the prompt for input ``text``, as the whole rendered text tokenizes (what a server
        that receives the text sees, and what the llama.cpp evaluation scores): tokenized alone, the text before
        the prompt can end in other tokens (SmolLM2: ``'\\n\\n'`` alone, ``'\\n', '\\n'`` before a word). A
        candidate whose text would merge with these tokens is not deployable (:meth:`roundtrips`)."""
        if text not in self._prefix_cache:
            before, after = self.layout.split(text)
            if self._after_ids is None:
                self._after_ids = self.tm.encode(after)
            anchored = self.tm.encode(self.PROMPT_ANCHOR) + self._after_ids
            whole = self.tm.encode(before + self.PROMPT_ANCHOR + after)
            if whole[-len(anchored) :] == anchored:
                self._prefix_cache[text] = whole[: -len(anchored)]
            else:  # pragma: no cover - a tokenizer that merges across the prompt's first character
                self._prefix_cache[text] = self.tm.encode(before)
        return self._prefix_cache[text]

    @property
    def after_ids(self) -> list[int]:
        if self._after_ids is None:
            self._split(self.train[0].input)
        assert self._after_ids is not None  # (set by _split)
        return self._after_ids

    def _answer_ids(self, answer: str) -> list[int]:
        if answer not in self._answer_cache:
            self._answer_cache[answer] = self.tm.encode(answer_text(answer))
        return self._answer_cache[answer]

    def encode_prompt(self, text: str) -> list[int]:
        return self.tm.encode(text)

    def decode(self, ids) -> str:
        return self.tm.decode(ids)

    def _out_of_time(self, stop, t_start: float, reserve: float = 0.0) -> bool:
        """A stop was asked for, or the time budget (less ``reserve``, the final choice's share) is spent: no new
        step starts."""
        budget = self.config.time_budget_s
        return (stop is not None and stop.is_set()) or (
            budget is not None and time.perf_counter() - t_start >= budget - reserve
        )

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

    def initial_state(self, prompt_text: str) -> dict:
        ids = self.encode_prompt(prompt_text)
        if not ids:
            raise ConfigError("The initial prompt is empty.")
        if self.train and not self.roundtrips(ids):
            self.events.append(
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
        if self.predict_only:
            raise ConfigError("This engine was made to predict only (no training examples); it cannot search.")
        if self.config.schedule == "improved":
            return self._run_improved(state, stop)
        return self._run_reference(state, stop)

    def _run_reference(self, state: dict, stop: threading.Event | None = None) -> Iterator[StepRecord]:
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
            # a grown prompt has no current score, and a step always has candidates to choose from
            assert new_score is not None, "a step with neither a current score nor a candidate"
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
            yield cast(StepRecord, record)

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
