"""The llama.cpp backend: loads a GGUF once, scores labels from next-token logits, generates greedily.

The same layout and token segments as the torch optimizer (see :mod:`toolkit.layout`), so scores are
comparable. The longest common token prefix with the previous call stays in the KV cache (the chat header
and system message are evaluated once per model, not once per example).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InputTooLongError, ModelFileError
from .models import ModelInfo, verified_gguf

STOP_TOKEN_TEXTS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>")


def _silence_llama_logs() -> None:
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def _noop(level, text, user_data):  # pragma: no cover - C callback
        return None

    llama_cpp.llama_log_set(_noop, ctypes.c_void_p(0))
    _LOG_CALLBACK.append(_noop)  # keep the callback alive


_LOG_CALLBACK: list = []


def resolve_gpu_layers(requested: int | None) -> int:
    """Layers to offload: ``requested`` when given, else all (-1) if this llama.cpp build can offload to a
    GPU (CUDA, Metal, Vulkan...) and 0 on a CPU-only build."""
    if requested is not None:
        return requested
    import llama_cpp

    try:
        return -1 if llama_cpp.llama_supports_gpu_offload() else 0
    except AttributeError:  # pragma: no cover - very old builds
        return 0


@dataclass
class LlamaCppModel:
    info: ModelInfo
    n_ctx: int = 4096
    n_threads: int | None = None
    n_gpu_layers: int | None = None  # None: all layers on the GPU when this llama.cpp build has GPU offload
    llm: Any = field(init=False, repr=False)  # llama_cpp.Llama
    sha256: str = field(init=False)
    stats: dict = field(init=False, default_factory=lambda: {"calls": 0, "evaluated_tokens": 0, "generated_tokens": 0})
    _grammars: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self):
        try:
            import llama_cpp
        except ImportError:
            raise ModelFileError("llama-cpp-python is not installed: pip install llama-cpp-python") from None
        path, self.sha256 = verified_gguf(self.info)
        _silence_llama_logs()
        threads = self.n_threads or max(1, os.cpu_count() or 1)
        self.n_gpu_layers = resolve_gpu_layers(self.n_gpu_layers)
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=self.n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=self.n_gpu_layers,
            logits_all=False,
            verbose=False,
            seed=0,
        )
        self.n_vocab = self.llm.n_vocab()
        self.stop_ids = {self.llm.token_eos()}
        for text in STOP_TOKEN_TEXTS:
            ids = self.encode(text)
            if len(ids) == 1:
                self.stop_ids.add(ids[0])
        meta = getattr(self.llm, "metadata", {}) or {}
        self.chat_template = self.info.template_for(meta.get("tokenizer.chat_template", ""))
        self.bos_token = self._token_text(meta.get("tokenizer.ggml.bos_token_id"))
        self.eos_token = self._token_text(meta.get("tokenizer.ggml.eos_token_id"))

    def close(self) -> None:
        """Free the model now. Left to the garbage collector at interpreter exit, llama-cpp-python's __del__ can
        run after its C library is unloaded and print 'Exception ignored in Llama.__del__'."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            llm.close()

    def _token_text(self, token_id) -> str:
        if token_id is None:
            return ""
        try:
            return self.llm.detokenize([int(token_id)], special=True).decode("utf-8", "replace")
        except TypeError:  # older llama-cpp-python without special=
            return self.llm.detokenize([int(token_id)]).decode("utf-8", "replace")

    # -- tokens ------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def decode(self, ids: Sequence[int]) -> str:
        try:
            return self.llm.detokenize(list(ids), special=True).decode("utf-8", "replace")
        except TypeError:  # pragma: no cover
            return self.llm.detokenize(list(ids)).decode("utf-8", "replace")

    # -- evaluation --------------------------------------------------------------------------

    def _eval(self, tokens: Sequence[int]) -> None:
        """Evaluate ``tokens``, reusing the KV cache for the prefix they share with the last call."""
        llm = self.llm
        tokens = list(tokens)
        if len(tokens) >= self.n_ctx:
            raise InputTooLongError(
                f"The input is {len(tokens)} tokens, longer than the context ({self.n_ctx}). "
                "Shorten the examples or lower --max-new-tokens."
            )
        cached = llm.input_ids[: llm.n_tokens].tolist()
        lcp = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            lcp += 1
        reuse = min(lcp, len(tokens) - 1)
        llm._ctx.kv_cache_seq_rm(-1, reuse, -1)
        llm.n_tokens = reuse
        llm.eval(tokens[reuse:])
        self.stats["calls"] += 1
        self.stats["evaluated_tokens"] += len(tokens) - reuse

    def next_logits(self, tokens: Sequence[int]):
        """[V] float32 numpy logits for the token after ``tokens``."""
        import numpy as np

        self._eval(tokens)
        return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,)).copy()

    def generate(self, tokens: Sequence[int], max_new_tokens: int, stop_texts: Sequence[str] = ()) -> list[int]:
        """Greedy continuation of ``tokens`` (at most ``max_new_tokens``, stopping at end of turn)."""
        return self.generate_constrained(tokens, None, max_new_tokens, stop_texts)

    def generate_constrained(
        self, tokens: Sequence[int], grammar: str | None, max_new_tokens: int, stop_texts: Sequence[str] = ()
    ) -> list[int]:
        """Greedy continuation of ``tokens`` (llama.cpp's own sampler), optionally under a GBNF ``grammar``.

        The KV cache keeps the longest prefix shared with the previous call.
        """
        out: list[int] = []
        if max_new_tokens <= 0:
            return out
        grammar_obj = None
        if grammar is not None:
            from llama_cpp import LlamaGrammar

            if grammar not in self._grammars:
                self._grammars[grammar] = LlamaGrammar.from_string(grammar, verbose=False)
            grammar_obj = self._grammars[grammar]
        tokens = list(tokens)
        if len(tokens) + max_new_tokens >= self.n_ctx:
            raise InputTooLongError(
                f"The input is {len(tokens)} tokens; with {max_new_tokens} new tokens it exceeds the context "
                f"({self.n_ctx}). Shorten the examples or lower --max-new-tokens."
            )
        before = self.llm.n_tokens
        for tok in self.llm.generate(
            tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, grammar=grammar_obj
        ):
            if tok in self.stop_ids or self.llm.token_eos() == tok:
                break
            out.append(tok)
            if len(out) >= max_new_tokens:
                break
            if stop_texts and any(s in self.decode(out) for s in stop_texts):
                break
        self.stats["calls"] += 1
        self.stats["generated_tokens"] += len(out)
        self.stats["evaluated_tokens"] += max(0, self.llm.n_tokens - before)
        return out
