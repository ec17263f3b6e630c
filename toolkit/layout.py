"""The prompt layout, shared by the optimizer (torch) and the evaluator (llama.cpp).

One example is laid out as::

    [chat template: user turn]  INPUT "\\n\\n" PROMPT  [end of user turn, assistant header]
    REASONING          (reasoning mode only: generated greedily by the model with the current prompt)
    EXTRACTOR          e.g. "Therefore, the final answer (one of: no, yes) is"
    " " ANSWER

With demonstrations (a prompt version's ordered (input, answer) pairs from the training split), each comes first
as an earlier exchange of the same chat, the form chat models are trained on::

    [user turn: DEMO INPUT]  [assistant turn: EXTRACTOR " " DEMO ANSWER]  ...  then the example as above

The instruction stays in its one slot in the last user turn (the demonstrations' turns hold only their inputs),
so the text before the prompt is fixed for a run and shared by every example: its KV is computed once.

The chat template comes from the model file itself (the GGUF's ``tokenizer.chat_template``) and is rendered
with a placeholder where the prompt goes, so the prompt span is found without per-family code. The rendered
text is tokenized in one piece with ``add_bos=False`` (the template adds BOS where the model wants one), as a
server that receives the text tokenizes it; the optimizer takes the tokens before the prompt from that whole
text and keeps only prompts whose tokens stay the same in place, so both runtimes see the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

PLACEHOLDER = "<<<GRADPROMPT_PROMPT_SLOT>>>"
INPUT_SEPARATOR = "\n\n"
REASONING_SEPARATOR = "\n"
# The one default cap on a reasoning chain, in tokens, for every command (optimize, eval, compare, tasks check,
# bench, demo, the TUI): a prompt is evaluated with the chain length it was optimized with. Small models rarely
# reason usefully past ~64 tokens; raise it with --max-new-tokens.
CHAIN_CAP = 64


@lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ValueError(message)

    def strftime_now(fmt):
        import datetime

        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(template)


def _render(template: str, **context) -> str:
    """A chat template rendered in the sandbox; one that does not compile, is refused by the sandbox or raises
    while rendering is a ModelFileError naming what failed (never a raw Jinja traceback)."""
    from jinja2 import TemplateError

    from .errors import ModelFileError

    try:
        return _compile(template).render(**context)
    except (TemplateError, ArithmeticError, LookupError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise ModelFileError(
            f"The model's chat template cannot be rendered ({type(exc).__name__}: {exc}). Fix the template in the "
            "model's manifest (chat_template) or use another model; `gradprompt models show ID` shows where it comes "
            "from.",
            title="Chat template problem",
        ) from None


FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


Demos = tuple[tuple[str, str], ...]


def demos_from_json(text: str | list | None) -> Demos:
    """A prompt version's demonstrations as stored (JSON [[input, answer], ...] or NULL) -> ((input, answer), ...)."""
    import json

    if text in (None, ""):
        return ()
    data = json.loads(text) if isinstance(text, str) else text
    return tuple((str(i), str(a)) for i, a in data)


def demos_to_json(demos: Demos) -> str | None:
    """The stored form (also part of the version's identity); None for no demonstrations."""
    import json

    return json.dumps([[i, a] for i, a in demos], ensure_ascii=False) if demos else None


@dataclass(frozen=True)
class ChatLayout:
    template: str
    bos_token: str = ""
    eos_token: str = ""
    demos: Demos = ()  # (input, answer) pairs shown as earlier turns
    extractor: str = ""  # what each demonstration's answer follows in its assistant turn (the task's extractor)

    def with_demos(self, demos: Demos, extractor: str) -> ChatLayout:
        return ChatLayout(self.template, self.bos_token, self.eos_token, tuple(demos), extractor)

    def demo_messages(self) -> list[dict]:
        turns: list[dict] = []
        for demo_input, demo_answer in self.demos:
            turns.append({"role": "user", "content": demo_input})
            turns.append({"role": "assistant", "content": (self.extractor + answer_text(demo_answer)).strip()})
        return turns

    def split(self, input_text: str) -> tuple[str, str]:
        """(text before the prompt, text after it) for one example's user turn."""
        rendered = _render(
            self.template or FALLBACK_TEMPLATE,
            messages=self.demo_messages()
            + [{"role": "user", "content": f"{input_text}{INPUT_SEPARATOR}{PLACEHOLDER}"}],
            add_generation_prompt=True,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        if rendered.count(PLACEHOLDER) != 1:
            from .errors import ModelFileError

            raise ModelFileError(
                "The model's chat template did not keep the user's message whole (the prompt's place appears "
                f"{rendered.count(PLACEHOLDER)} times, not once). Fix the template in the model's manifest "
                "(chat_template) or use another model.",
                title="Chat template problem",
            )
        before, after = rendered.split(PLACEHOLDER)
        return before, after

    def user_turn(self, text: str) -> str:
        """A whole user turn with ``text`` and the assistant header (for meta-prompts: no prompt slot)."""
        before, after = self.split(text)
        return before[: -len(INPUT_SEPARATOR)] + after

    def conversation(self, messages: list[dict]) -> str:
        """Several turns ([{"role", "content"}], ending with a user turn) and the assistant header, as text
        (the second attempt's layout: the first exchange, then the correction instruction)."""
        return _render(
            self.template or FALLBACK_TEMPLATE,
            messages=self.demo_messages() + list(messages),
            add_generation_prompt=True,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def render(self, input_text: str, prompt: str) -> str:
        before, after = self.split(input_text)
        return before + prompt + after


def answer_text(answer: str) -> str:
    """The answer as it follows the extractor."""
    return " " + answer.strip()


def demo_lines(stored: str | list | None, width: int = 100) -> list[str]:
    """A prompt version's demonstrations as lines for people ("1. INPUT -> ANSWER", one line each, clipped)."""
    lines = []
    for n, (demo_input, demo_answer) in enumerate(demos_from_json(stored), 1):
        flat = " ".join(demo_input.split())
        if len(flat) > width:
            flat = flat[: width - 3] + "..."
        lines.append(f"{n}. {flat} -> {demo_answer}")
    return lines
