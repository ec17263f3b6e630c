"""Both runtimes load the real default model and agree on its tokenizer and layout."""

from toolkit.layout import ChatLayout

SAMPLES = [
    "proper logical reasoning and think step by step. Finally give the actual correct answer.",
    'Is the following sentence plausible? "Elias Lindholm beat the buzzer."',
    "Therefore, the final answer (one of: negative, positive) is",
    " positive",
    "12,345 + 7 = ?",
    "<|im_start|>user\nhi<|im_end|>\n",
]


def test_tokenizers_agree(real_tm, llama):
    for text in SAMPLES:
        assert real_tm.encode(text) == llama.encode(text), text


def test_same_chat_template_and_layout(real_tm, llama):
    assert real_tm.chat_template == llama.chat_template
    a = ChatLayout(real_tm.chat_template).split("a review")
    b = ChatLayout(llama.chat_template, llama.bos_token, llama.eos_token).split("a review")
    assert a == b and a[0].endswith("a review\n\n") and "assistant" in a[1]


def test_llamacpp_generates_and_reuses_prefix(llama):
    before, after = ChatLayout(llama.chat_template).split("Say hello.")
    tokens = llama.encode(before + after)
    out = llama.generate(tokens, 8)
    assert 0 < len(out) <= 8
    evaluated = llama.stats["evaluated_tokens"]
    llama.next_logits(tokens)  # same prefix: only the last token is evaluated again
    assert llama.stats["evaluated_tokens"] - evaluated == 1
