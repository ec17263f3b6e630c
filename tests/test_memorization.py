"""The memorization check flags a task whose text the model was made to see, and not a random-string task.

A tiny model (a word-level vocabulary of a few words, 2 layers) is trained in the test on the examples of one task
until it reproduces them; the check then runs through the same runtime seam llama.cpp's model offers
(``encode``, ``next_logits``)."""

import json
import random
from dataclasses import dataclass

import pytest

from toolkit.memorization import check_task, example_text, probe_examples, summarize, warning_for
from toolkit.tasks import ImportOptions, read_task_file

WORDS = "river stone lamp quiet orange window seven market cloud velvet ladder honey garden copper whistle".split()


@dataclass
class _Info:
    id: str = "tiny-trained"


VOCAB = ["<pad>", "\n", *WORDS]


class TorchRuntime:
    """A torch causal LM over the word vocabulary, seen through the runtime protocol (no KV cache: it is tiny)."""

    def __init__(self, model):
        self.model, self.info, self.sha256 = model, _Info(), "tiny-trained"

    def encode(self, text):
        return [VOCAB.index(w) for w in text.replace("\n", " \n ").split(" ") if w]

    def next_logits(self, tokens):
        import torch

        with torch.no_grad():
            return self.model(torch.tensor([tokens])).logits[0, -1].float().numpy()


def _rows(seed, n=12):
    rng = random.Random(seed)
    return [
        (" ".join(rng.choice(WORDS) for _ in range(14)), " ".join(rng.choice(WORDS) for _ in range(3)))
        for _ in range(n)
    ]


def _store(project, tmp_path, name, rows):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"input": i, "target": t}) + "\n" for i, t in rows))
    task = read_task_file(path, name=name, options=ImportOptions(split=(0, 0, 1)))
    return project.store.task_by_id(project.store.add_task(project.id, task))


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained on the texts of ``_rows(0)`` (input, newline, answer) until it knows them by heart."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(VOCAB),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
    )
    runtime = TorchRuntime(model)
    seqs = [runtime.encode(example_text({"input": i, "answer": a})) for i, a in _rows(0)]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    labels = torch.tensor([s + [-100] * (width - len(s)) for s in seqs])
    mask = (labels != -100).long()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(300):
        loss = model(ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.05:  # (greedy recall needs no more)
            break
    model.eval()
    return runtime


@pytest.mark.slow  # trains a tiny model
def test_a_task_the_model_has_seen_is_flagged_and_a_random_one_is_not(trained, project, tmp_path):
    seen = _store(project, tmp_path, "seen", _rows(0))
    unseen = _store(project, tmp_path, "unseen", _rows(1))  # the same words, new strings
    flagged = check_task(project, trained, seen, "test")
    clean = check_task(project, trained, unseen, "test")
    assert flagged["summary"]["checked"] == 12 and flagged["summary"]["flagged"]
    assert flagged["summary"]["recalled"] >= 10 and flagged["summary"]["median_gap"] > 2
    assert not clean["summary"]["flagged"] and clean["summary"]["recalled"] == 0
    # stored, and the warning an evaluation of that split prints
    assert project.store.memorization_checks(seen["id"], "test")[0]["id"] == flagged["id"]
    said = warning_for(project.store, seen["id"], "test", "tiny-trained")
    assert said and "looks memorized by tiny-trained" in said and f"{flagged['summary']['recalled']} of 12" in said
    assert warning_for(project.store, unseen["id"], "test", "tiny-trained") is None
    assert warning_for(project.store, seen["id"], "test", "another-model") is None


def test_short_examples_are_not_checked_and_a_formulaic_text_needs_a_gap(trained):
    short = [{"id": i, "input": "river", "answer": "stone"} for i in range(5)]  # 3 tokens: nothing to cut
    assert probe_examples(trained, short) == []
    assert summarize([], 5)["flagged"] is False


class FormulaRuntime:
    """A runtime that knows one formula (a sequence of distinct tokens, like an option list) and continues it from
    anywhere: after two consecutive tokens of the formula, the next one has logit 20; otherwise every token is
    equally likely. What any model does with a split's shared template, without having seen the split."""

    def __init__(self, vocab, formula):
        self.vocab, self.info, self.sha256 = vocab, _Info("formula-reader"), "formula"
        self.formula = [vocab.index(w) for w in formula]

    def encode(self, text):
        return [self.vocab.index(w) for w in text.replace("\n", " \n ").split(" ") if w]

    def next_logits(self, tokens):
        import numpy as np

        logits = np.zeros(len(self.vocab))
        pairs = list(zip(self.formula, self.formula[1:]))
        if len(tokens) >= 2 and (tokens[-2], tokens[-1]) in pairs:
            logits[self.formula[pairs.index((tokens[-2], tokens[-1])) + 2]] = 20.0
        return logits


def test_a_shared_formula_the_model_continues_is_not_memory(project, tmp_path):
    """Every example ends with the same formula (an option list, a template), cut at different places: the
    model continues it, and the control (another example's suffix, from elsewhere in the formula) is far below,
    so reproduction and gap alone flag the split (what happened with Gemma on reasoning_about_colored_objects);
    the suffix's 4-grams occur in other examples, so it is formulaic and not counted as memory."""
    formula = WORDS[:11] + ["\n"] + WORDS[11:13]
    others = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    runtime = FormulaRuntime(VOCAB + others, formula)
    rng = random.Random(7)
    rows = [(" ".join(rng.choice(others) for _ in range(4 + i % 6)) + " " + " ".join(WORDS[:11]), " ".join(WORDS[11:13]))
            for i in range(12)]  # fmt: skip
    path = tmp_path / "formula.jsonl"
    path.write_text("".join(json.dumps({"input": i, "target": t}) + "\n" for i, t in rows))
    options = ImportOptions(split=(0, 0, 1), answer_kind="text")
    task = project.store.task_by_id(project.store.add_task(project.id, read_task_file(path, options=options)))
    check = check_task(project, runtime, task, "test")
    continued = [p for p in check["rows"] if p["matched"] == p["suffix_tokens"] and p["gap"] >= 1.0]
    # reproduced well above the control (unless the control was cut at the same place): without the rule, these
    # would be "recalled" and the split flagged
    assert len(continued) >= 10 and all(p["shared"] == 1.0 for p in continued)
    assert check["summary"]["recalled"] == 0 and not check["summary"]["flagged"]
    assert check["summary"]["formulaic"] == len(continued)


def test_eval_prints_the_warning_for_a_split_that_looks_memorized(project):
    """The eval command's own output (not only warning_for): a flagged check of (task, split, model) is said."""
    from click.testing import CliRunner

    from toolkit.cli import cli
    from toolkit.demo import ensure_demo_task
    from toolkit.models import get_model

    task = ensure_demo_task(project)
    pid = project.add_prompt(task, "Is this review positive or negative?", origin="user")
    args = ["--project", str(project.path), "eval", str(pid), "--limit", "2"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0 and "looks memorized" not in first.output
    summary = {"recalled": 5, "checked": 20, "flagged": True}
    project.store.add_memorization_check(
        {"project_id": project.id, "task_id": task["id"], "split": "test", "model_id": get_model().id,
         "model_sha256": "", "n": 20, "recalled": 5, "flagged": 1, "summary": summary, "rows": []}
    )  # fmt: skip
    said = CliRunner().invoke(cli, args)
    assert said.exit_code == 0 and "looks memorized" in " ".join(said.output.split())
    assert "5 of 20" in " ".join(said.output.split())
