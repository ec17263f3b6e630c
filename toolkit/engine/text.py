"""The text side of the engine: how one example is laid out around the prompt, in tokens.

:class:`PromptText` owns the model's tokenizer and the chat layout (with a prompt version's demonstrations):
the tokens before the prompt for an input, the tokens after it, the extractor and each answer, the label
tokens, the stop tokens, and whether a prompt's text tokenizes back to the same ids in place (what a server
receiving the text would see). It computes no logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from ..layout import REASONING_SEPARATOR, ChatLayout, answer_text
from ..tasks import AnswerSpec
from .config import GreaterConfig

# The end-of-turn tokens of the chat templates gradprompt meets, beside the tokenizer's own end of text.
END_OF_TURN = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>")


class PromptText:
    """Tokens around the prompt for one model, task and layout (cached by input)."""

    # The prompt's first character, standing in for any prompt that starts with a visible character when the
    # text before a prompt is tokenized (see :meth:`split`).
    PROMPT_ANCHOR = "A"

    def __init__(
        self,
        tm,
        spec: AnswerSpec,
        config: GreaterConfig,
        demos: Sequence[tuple[str, str]] = (),
        sample_input: str | None = None,
    ):
        """``sample_input``: an input whose layout tells the tokens around the prompt before any example was
        split (a training row's; the roundtrip check uses it too)."""
        self.tm = tm
        self.tokenizer = tm.tokenizer
        self.spec = spec
        self.sample_input = sample_input
        self.layout = ChatLayout(
            tm.chat_template, getattr(tm.tokenizer, "bos_token", "") or "", getattr(tm.tokenizer, "eos_token", "") or ""
        )
        if demos:
            self.layout = self.layout.with_demos(tuple((d[0], d[1]) for d in demos), spec.extractor)
        sep = REASONING_SEPARATOR if config.mode == "reasoning" else ""
        self.extractor_ids: list[int] = tm.encode(sep + spec.extractor)
        self._after_ids: list[int] | None = None
        self._prefix_cache: dict[str, list[int]] = {}
        self._answer_cache: dict[str, list[int]] = {}
        self.label_ids: list[list[int]] = []
        self.label_first: list[int] | None = None
        if spec.kind == "label":
            self.label_ids = [tm.encode(answer_text(lab)) for lab in spec.labels]
            firsts = [ids[0] for ids in self.label_ids]
            self.label_first = firsts if len(set(firsts)) == len(firsts) else None
        tok = tm.tokenizer
        self.stop_ids: set[int] = {i for i in (tok.eos_token_id,) if i is not None}
        for name in END_OF_TURN:
            tid = tok.convert_tokens_to_ids(name)
            if isinstance(tid, int) and tid != tok.unk_token_id and tid >= 0:
                self.stop_ids.add(tid)

    # ------------------------------------------------------------------ tokens

    def encode(self, text: str) -> list[int]:
        return self.tm.encode(text)

    def decode(self, ids) -> str:
        return self.tm.decode(ids)

    def split(self, text: str) -> list[int]:
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
        """The tokens after the prompt (the end of the user turn and the assistant header)."""
        if self._after_ids is None:
            self.split(self.sample_input if self.sample_input is not None else "")
        assert self._after_ids is not None  # (set by split)
        return self._after_ids

    def answer_ids(self, answer: str) -> list[int]:
        if answer not in self._answer_cache:
            self._answer_cache[answer] = self.tm.encode(answer_text(answer))
        return self._answer_cache[answer]

    @property
    def pad_id(self) -> int:
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = next(iter(self.stop_ids)) if self.stop_ids else 0
        return pad_id

    def token_texts(self) -> list[str]:
        """Each token id's text ('' for special tokens), computed once per tokenizer."""
        tok = self.tokenizer
        texts = getattr(tok, "_gradprompt_token_texts", None)
        if texts is None:
            special = set(getattr(tok, "all_special_ids", None) or [])
            texts = ["" if i in special else tok.decode([i]) for i in range(len(tok))]
            tok._gradprompt_token_texts = texts
        return texts

    def roundtrips(self, prompt: Sequence[int]) -> bool:
        """The prompt's text tokenizes back to the same ids in place: alone, and inside the rendered layout of the
        sample input (between the text before it and the end of the turn), which is what a server receiving the
        text sees and what the llama.cpp evaluation scores."""
        prompt = list(prompt)
        text = self.decode(prompt)
        if self.encode(text) != prompt:
            return False
        if self.sample_input is None:
            return True
        before, after = self.layout.split(self.sample_input)
        return self.tm.encode(before + text + after) == self.split(self.sample_input) + prompt + self.after_ids

    # ------------------------------------------------------------------ layouts

    @contextlib.contextmanager
    def using_demos(self, demos: Sequence[tuple[str, str]]) -> Iterator[None]:
        """The layout with ``demos`` shown before every example; the other layout's tokens are set aside and
        restored afterwards."""
        saved = (self.layout, self._after_ids, self._prefix_cache)
        self.layout = self.layout.with_demos(tuple(demos), self.spec.extractor)
        self._after_ids, self._prefix_cache = None, {}
        try:
            yield
        finally:
            self.layout, self._after_ids, self._prefix_cache = saved
