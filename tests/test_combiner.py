"""The trained combiner (issue 16): a reranker trained with torch on the training split, saved as safetensors,
loaded by evaluation."""

import json

import numpy as np
import pytest

from toolkit import combiner
from toolkit.errors import ConfigError

PROMPTS = ["Classify the sentiment.", "Answer the question.", "Is the review positive or negative?"]


def test_the_reranker_learns_to_undo_a_biased_prompt_and_round_trips_through_safetensors(tmp_path):
    """Prompt 1 always leans to label 0 but its margin carries the answer; prompt 2 is noise. A vote or argmax of
    prompt 1 gets ~50%; the trained reranker gets nearly all, and its file reads back (also with safetensors)."""
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    margin = np.clip(np.where(y == 1, 0.5, 2.0) + rng.normal(0, 0.2, n), 0.05, None)  # label 0 always preferred
    x = np.stack([np.zeros(n), -margin, rng.normal(0, 1, n), rng.normal(0, 1, n)], axis=1).astype(np.float32)
    assert (x[:, 0] > x[:, 1]).all()  # prompt 1 alone answers label 0 every time
    weight, bias = combiner.train_weights(x.tolist(), y.tolist(), 2)
    pred = (x @ weight + bias).argmax(axis=1)
    assert (pred == y).mean() > 0.9

    path = combiner.save(tmp_path / "c.safetensors", weight, bias, {"labels": ["a", "b"], "train_n": n})
    loaded = combiner.load(path)
    assert np.array_equal(loaded.weight, weight) and np.array_equal(loaded.bias, bias)
    assert loaded.meta == {"labels": ["a", "b"], "train_n": n} and len(loaded.sha256) == 64
    probs = loaded.probabilities(x[0])
    assert probs.sum() == pytest.approx(1.0) and int(probs.argmax()) == pred[0]
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    other = safetensors_numpy.load_file(str(path))
    assert np.array_equal(other["weight"], weight) and np.array_equal(other["bias"], bias)
    assert not list(tmp_path.glob("*.partial"))


def test_a_file_that_is_not_a_combiner_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="Cannot read the combiner .*--trained"):
        combiner.load(bad)


def _evaluated(project, llama, n):
    from toolkit.demo import ensure_demo_task
    from toolkit.evaluation import evaluate_prompt

    task = ensure_demo_task(project)
    ids = []
    for text in PROMPTS:
        pid = project.add_prompt(task, text, origin="manual")
        report = evaluate_prompt(
            project.store, model=llama, task_row=task, prompt_row=project.store.prompt(pid), limit=n
        )
        ids.append(report.evaluation_id)
    return task, ids


def test_trained_combine_on_the_default_model_stores_reuses_and_counts(project, llama, tmp_path):
    from toolkit.effects import vote

    n, k = 8, len(PROMPTS)
    task, ids = _evaluated(project, llama, n)
    folder = tmp_path / "combiners"
    calls0 = llama.stats["calls"]
    first = combiner.trained_combine(project, model=llama, folder=folder, evaluation_ids=ids, train_size=12)
    assert first.trained and first.train_n == 12 and first.train_calls == k * 12  # one call per prompt and example
    assert first.calls == k * n and llama.stats["calls"] - calls0 == k * (12 + n)
    files = list(folder.glob("*.safetensors"))
    assert [f.name for f in files] == [first.combiner.rsplit("/", 1)[-1]]
    meta = combiner.load(files[0]).meta
    assert meta["prompts"] == PROMPTS and meta["labels"] == ["negative", "positive"]

    ev = project.store.evaluation(first.combined.evaluation_id)
    assert ev["mode"] == "direct+trained-combine" and ev["n"] == n
    rows = project.store.example_results(ev["id"])
    assert len(rows) == n and all(r["output"].startswith("candidates: ") and "reranker: " in r["output"] for r in rows)
    assert first.combined.correct == sum(r["correct"] for r in rows)
    voted = vote(project.store, ids)
    assert first.vote_accuracy == voted["vote_accuracy"] and first.any_correct == voted["any_correct"]
    assert first.flips_vs_best["n"] == n

    # a second run loads the file and answers every example from the cache: no model call at all
    calls1 = llama.stats["calls"]
    again = combiner.trained_combine(project, model=llama, folder=folder, evaluation_ids=ids, train_size=12)
    assert not again.trained and again.combined.cached == n and llama.stats["calls"] == calls1
    assert again.combined.correct == first.combined.correct
    assert json.loads(json.dumps(again.to_dict()))["combined"]["n"] == n


def test_trained_combine_refuses_what_it_cannot_do(project, llama, tmp_path):
    task, ids = _evaluated(project, llama, 4)
    with pytest.raises(ConfigError, match="at least two"):
        combiner.trained_combine(project, model=llama, folder=tmp_path, evaluation_ids=ids[:1])
    with pytest.raises(ConfigError, match="too few"):
        combiner.trained_combine(project, model=llama, folder=tmp_path, evaluation_ids=ids, train_size=2)
