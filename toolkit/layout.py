"""The prompt layout, shared by the optimizer (torch) and the evaluator (llama.cpp).

One example is laid out as::

    [chat template: user turn]  INPUT "\\n\\n" PROMPT  [end of user turn, assistant header]
    REASONING          (reasoning mode only: generated greedily by the model with the current prompt)
    EXTRACTOR          e.g. "Therefore, the final answer (one of: no, yes) is"
    " " ANSWER

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


FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass(frozen=True)
class ChatLayout:
    template: str
    bos_token: str = ""
    eos_token: str = ""

    def split(self, input_text: str) -> tuple[str, str]:
        """(text before the prompt, text after it) for one example's user turn."""
        rendered = _compile(self.template or FALLBACK_TEMPLATE).render(
            messages=[{"role": "user", "content": f"{input_text}{INPUT_SEPARATOR}{PLACEHOLDER}"}],
            add_generation_prompt=True,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        if rendered.count(PLACEHOLDER) != 1:
            raise ValueError("The chat template did not keep the prompt placeholder exactly once.")
        before, after = rendered.split(PLACEHOLDER)
        return before, after

    def user_turn(self, text: str) -> str:
        """A whole user turn with ``text`` and the assistant header (for meta-prompts: no prompt slot)."""
        before, after = self.split(text)
        return before[: -len(INPUT_SEPARATOR)] + after

    def conversation(self, messages: list[dict]) -> str:
        """Several turns ([{"role", "content"}], ending with a user turn) and the assistant header, as text
        (the second attempt's layout: the first exchange, then the correction instruction)."""
        return _compile(self.template or FALLBACK_TEMPLATE).render(
            messages=messages, add_generation_prompt=True, bos_token=self.bos_token, eos_token=self.eos_token
        )

    def render(self, input_text: str, prompt: str) -> str:
        before, after = self.split(input_text)
        return before + prompt + after


def answer_text(answer: str) -> str:
    """The answer as it follows the extractor."""
    return " " + answer.strip()
