"""The evaluation loop through the runtime seam: a fake runtime (a rule, not a model) and a real history.

What every evaluation promises, with no model loaded: each example's answer is stored as it is done and cached
by (prompt, model, settings, example), so a repeated evaluation calls the runtime for nothing and a stopped one
continues with only the examples it had not done; the label rule (and a stored calibration) decide the answer;
accuracy and its interval are what the stored rows say."""

import json
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from toolkit.evaluation import evaluate_prompt
from toolkit.stats import wilson_interval
from toolkit.tasks import ImportOptions, read_task_file


@dataclass
class _Info:
    id: str = "fake"
    quantization: str = "F32"
    chat_template: str = "gguf"


class FakeRuntime:
    """Words are tokens; after any text containing "good" the next token " yes" scores 2 and " no" 1, else the
    other way round. Counts its forward passes."""

    chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    bos_token, eos_token, n_gpu_layers, sha256 = "", "", 0, "fake-sha"

    def __init__(self):
        self.info = _Info()
        self.vocab: dict[str, int] = {}
        self.words: list[str] = []
        self.calls = 0

    def encode(self, text: str) -> list[int]:
        out = []
        for word in text.replace("\n", " \n ").split(" "):
            if word not in self.vocab:
                self.vocab[word] = len(self.words)
                self.words.append(word)
            out.append(self.vocab[word])
        return out

    def next_logits(self, tokens: list[int]):
        self.calls += 1
        logits = np.zeros(max(len(self.words), 8) + 8, dtype=np.float32)
        good = "good" in {self.words[t] for t in tokens}
        yes, no = self.encode(" yes")[-1], self.encode(" no")[-1]
        logits[yes], logits[no] = (2.0, 1.0) if good else (1.0, 2.0)
        return logits


def _task(project, tmp_path):
    rows = [("a good film", "yes"), ("a bad film", "no"), ("good fun", "yes"), ("dull", "yes"), ("awful", "no")]
    path = tmp_path / "yn.jsonl"
    path.write_text("".join(json.dumps({"input": f"{i} ({n})", "target": t}) + "\n" for n in (1, 2) for i, t in rows))
    task = read_task_file(path, name="yn", options=ImportOptions(split=(0, 0, 1)))
    return project.store.task_by_id(project.store.add_task(project.id, task))


def test_answers_are_stored_cached_and_scored(project, tmp_path):
    task = _task(project, tmp_path)
    prompt = project.store.prompt(project.add_prompt(task, "Is it good?", origin="manual"))
    runtime = FakeRuntime()
    report = evaluate_prompt(project.store, model=runtime, task_row=task, prompt_row=prompt)
    rows = project.store.results(report.evaluation_id)
    assert len(rows) == 10 and report.correct == 8  # "dull" is a yes without "good": the rule says no
    assert {r["predicted"] for r in rows} == {"yes", "no"} and report.model_calls == 10
    ev = project.store.evaluation(report.evaluation_id)
    assert ev["accuracy"] == 0.8 and (ev["ci_low"], ev["ci_high"]) == wilson_interval(8, 10)
    again = evaluate_prompt(project.store, model=runtime, task_row=task, prompt_row=prompt)
    assert again.model_calls == 0 and again.cached == 10 and again.correct == 8  # the cache answered
    other = project.store.prompt(project.add_prompt(task, "Is it good at all?", origin="manual"))
    assert evaluate_prompt(project.store, model=runtime, task_row=task, prompt_row=other).model_calls == 10


def test_a_stopped_evaluation_continues_with_what_it_had_not_done(project, tmp_path):
    task = _task(project, tmp_path)
    prompt = project.store.prompt(project.add_prompt(task, "Is it good?", origin="manual"))
    stop = threading.Event()

    def progress(done, total):
        if done == 4:
            stop.set()

    first = evaluate_prompt(
        project.store, model=FakeRuntime(), task_row=task, prompt_row=prompt, progress=progress, stop=stop
    )
    assert first.n == 4 and project.store.evaluation(first.evaluation_id)["status"] == "stopped"
    second = evaluate_prompt(project.store, model=FakeRuntime(), task_row=task, prompt_row=prompt)
    assert second.cached == 4 and second.model_calls == 6 and second.n == 10


def test_a_stored_calibration_decides_the_label(project, tmp_path):
    from toolkit.calibration import fit

    task = _task(project, tmp_path)
    # the runtime's scores are (no, yes) = (1, 2) or (2, 1); a calibration fitted where "no" always won by 6
    # lowers it by ~6: then yes always wins
    cal = fit("batch", [[5.0, -1.0]] * 3, ("no", "yes"))
    cid = project.add_prompt(task, "Is it good?", origin="calibrated", calibration=cal.to_json())
    report = evaluate_prompt(project.store, model=FakeRuntime(), task_row=task, prompt_row=project.store.prompt(cid))
    predicted = {r["predicted"] for r in project.store.results(report.evaluation_id)}
    assert predicted == {"yes"} and report.correct == 6


class RuleRuntime:
    """A third implementation of the runtime protocol (neither llama.cpp nor torch): answers "yes" when the input
    says "good", in batches of 3; records how it was called."""

    backend = "rule"
    batch_size = 3

    def __init__(self, key: str = "rule-v1"):
        self.model = None
        self.key = key
        self.batches: list[int] = []

    def identity(self) -> dict:
        return {"model_id": "rule", "model_sha256": self.key, "quantization": "none"}

    def row_settings(self) -> dict:
        return {"rule": "good means yes"}

    def model_key(self) -> str:
        return self.key

    def answers(self, spec, prompt_row, settings, calibration):
        def answer(batch):
            self.batches.append(len(batch))
            return [(ex["input"], "yes" if "good" in ex["input"] else "no") for ex in batch]

        return answer


def test_any_runtime_goes_through_the_one_evaluation_service(project, tmp_path):
    """The service owns the row, the cache key and the loop; a runtime only answers, says what it is and what
    keys its answers. Two runtimes with different keys do not share answers; the strategies stay on llama.cpp."""
    from toolkit.errors import ConfigError
    from toolkit.evaluate import EvalSettings
    from toolkit.evaluation import Runtime, as_runtime

    task = _task(project, tmp_path)
    prompt = project.store.prompt(project.add_prompt(task, "Is it good?", origin="manual"))
    runtime = RuleRuntime()
    assert isinstance(runtime, Runtime) and as_runtime(runtime) is runtime
    report = evaluate_prompt(project.store, model=runtime, task_row=task, prompt_row=prompt)
    assert runtime.batches == [3, 3, 3, 1] and report.correct == 8 and report.model_calls == 10
    ev = project.store.evaluation(report.evaluation_id)
    assert (ev["backend"], ev["model_id"], ev["model_sha256"], ev["quantization"]) == (
        "rule",
        "rule",
        "rule-v1",
        "none",
    )
    assert ev["settings"]["rule"] == "good means yes" and ev["settings"]["limit"] is None
    again = evaluate_prompt(project.store, model=RuleRuntime(), task_row=task, prompt_row=prompt)
    assert again.cached == 10 and again.model_calls == 0  # the same key: the cache answers
    other = evaluate_prompt(project.store, model=RuleRuntime("rule-v2"), task_row=task, prompt_row=prompt)
    assert other.cached == 0 and other.model_calls == 10  # another key: its own answers
    with pytest.raises(ConfigError, match="llama.cpp backend"):
        evaluate_prompt(
            project.store,
            model=RuleRuntime(),
            task_row=task,
            prompt_row=prompt,
            settings=EvalSettings(strategy="logic-of-thought"),
        )


def test_a_loaded_model_is_wrapped_in_its_runtime(tiny_tm):
    from toolkit.evaluation import LlamaCppRuntime, TorchRuntime, as_runtime

    torch_rt = as_runtime(tiny_tm)
    assert isinstance(torch_rt, TorchRuntime) and torch_rt.backend == "torch" and torch_rt.batch_size == 16
    assert torch_rt.model_key() == "tiny:torch:fp32:cpu"
    assert isinstance(as_runtime(FakeRuntime()), LlamaCppRuntime)  # anything with llama.cpp's interface
