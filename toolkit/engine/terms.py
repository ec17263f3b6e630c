"""One example's terms under a prompt: the answer loss, the prompt's NLL and whether the answer is right, read
from logits. :class:`Terms` lays out the scored sequence and turns its logits into those three numbers; every
scorer of the engine (full sequences, suffix KV, chains decoded with their answers) goes through it."""

from __future__ import annotations

from collections.abc import Sequence

from ..tasks import AnswerSpec
from .config import GreaterConfig, Item
from .text import PromptText


class Terms:
    """(answer loss, prompt NLL, correct) per example."""

    def __init__(self, text: PromptText, spec: AnswerSpec, config: GreaterConfig):
        import torch

        self.torch = torch
        self.text = text
        self.spec = spec
        self.config = config
        # Label tasks whose labels start with distinct tokens are scored on the first answer token among the
        # labels (improved schedule); otherwise on every answer token over the vocabulary.
        self.label_fast = spec.kind == "label" and text.label_first is not None and config.schedule == "improved"

    def sequence(self, item: Item, prompt: Sequence[int], chain: Sequence[int]):
        """Return (ids, prompt_start, answer_start, answer_ids) for one example."""
        text = self.text
        before = text.split(item.input)
        head = list(before) + list(prompt) + text.after_ids + list(chain) + text.extractor_ids
        ans = text.answer_ids(item.answer)
        return head + ans, len(before), len(head), ans

    def answer_rows(self, ans: Sequence[int]) -> int:
        """How many answer rows of logits are read: one for the fast label rule, else one per answer token."""
        return 1 if self.label_fast else len(ans)

    @staticmethod
    def prompt_positions(p_start: int, n_prompt: int) -> list[int]:
        # logits at position i predict token i+1; prompt token 0 is predicted from p_start - 1
        return list(range(p_start - 1, p_start + n_prompt - 1))

    def of(self, logits, prompt_ids: Sequence[int], item: Item, ans: list[int]):
        """(answer loss, prompt NLL, correct) from logits [n_prompt + n_answer_rows, V]."""
        torch = self.torch
        F = torch.nn.functional
        n_prompt = len(prompt_ids)
        p_logits = logits[:n_prompt]
        target = torch.tensor(list(prompt_ids), device=logits.device)
        nll = F.cross_entropy(p_logits, target) if n_prompt else logits.new_zeros(())
        loss, correct = self.answer(logits[n_prompt:], item, ans)
        return loss, nll, correct

    def answer(self, a_logits, item: Item, ans: list[int]):
        """(answer loss, correct) from the answer rows' logits [n_answer_rows, V]."""
        torch = self.torch
        F = torch.nn.functional
        T = self.config.ce_temperature
        if self.label_fast:
            # Score the answer among the labels (first tokens are distinct).
            lab = a_logits[0, self.text.label_first]  # [K]
            gold = self.spec.labels.index(item.answer) if item.answer in self.spec.labels else -1
            loss = F.cross_entropy((lab / T).unsqueeze(0), torch.tensor([gold], device=a_logits.device))
            correct = bool(int(lab.argmax()) == gold)
        else:
            gold_ids = torch.tensor(ans, device=a_logits.device)
            loss = F.cross_entropy(a_logits / T, gold_ids)
            correct = bool((a_logits.argmax(-1) == gold_ids).all())
        return loss, correct
