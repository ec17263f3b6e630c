import os
import tempfile
from pathlib import Path

import pytest

# One user data directory for the whole session: the converted torch weights are cached there once.
_HOME = tempfile.mkdtemp(prefix="gradprompt-test-home-")
os.environ["GRADPROMPT_HOME"] = _HOME
os.environ.pop("GRADPROMPT_PROJECT", None)


# The fast lane, `pytest -m "not slow"`: every test that needs no real model and takes under a second or so.
# Chosen per test:
# * a test that loads a real model (the 135M GGUF in llama.cpp or its weights in torch, or a Ray cluster) is slow
#   by the fixtures it uses, so a new test of that kind is marked without anyone remembering to;
# * a module whose every test builds a bundle, a wheel, a subprocess pipeline or a converted model is slow whole;
# * anything else that takes seconds (a several-step search or a Pilot session of many screens on the tiny model,
#   the real model reached through the CLI) carries ``@pytest.mark.slow`` with its reason, at the test.
# So the engine on the tiny model, the TUI through Pilot, every snapshot test and every pure test run in the fast
# lane (docs/architecture.md).
SLOW_FIXTURES = {"real_tm", "llama", "ray_cluster"}
SLOW_MODULES = {
    "test_bundle",
    "test_wheel",
    "test_edge",
    "test_crash",
    "test_quantize",
    "test_runtimes",
    "test_offline",
    "test_export_tools",  # a llama.cpp server, promptfoo, llm
    "test_families",  # a tiny model per family, converted and loaded in both runtimes
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session, exitstatus):
    """The test user directory holds ~1 GB of converted weights and GGUF variants: remove it at the end."""
    import shutil

    shutil.rmtree(_HOME, ignore_errors=True)


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared/data (BIG-Bench Hard files) is not beside the checkout"
)


@pytest.fixture
def project(tmp_path):
    from toolkit.project import init_project

    proj = init_project(tmp_path / "proj", name="test")
    yield proj
    proj.close()


@pytest.fixture
def store():
    from toolkit.store import Store

    s = Store(memory=True)
    yield s
    s.close()


@pytest.fixture(scope="session")
def real_tm():
    """The real default model for torch (fp32, CPU), loaded once."""
    from toolkit.engine.torch_backend import load_torch_model
    from toolkit.models import get_model

    return load_torch_model(get_model(), precision="fp32", device="cpu")


@pytest.fixture(scope="session")
def llama():
    from toolkit.llamacpp import LlamaCppModel
    from toolkit.models import get_model

    model = LlamaCppModel(get_model(), n_ctx=2048)
    yield model
    model.close()


@pytest.fixture(scope="session")
def tokenizer():
    """The default model's tokenizer alone, read from its GGUF: no weights are loaded or converted."""
    from transformers import AutoTokenizer

    from toolkit.engine.torch_backend import offline_env, quiet_transformers
    from toolkit.models import get_model

    offline_env()
    quiet_transformers()
    gguf = Path(get_model().to_dict()["gguf_path"])
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)


@pytest.fixture(scope="session")
def tiny_tm(tokenizer):
    """A tiny random-weight causal LM (2 layers) sharing the default model's tokenizer and chat template (the
    real model is never loaded for it)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from toolkit.engine.torch_backend import TorchModel
    from toolkit.models import get_model

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return TorchModel(model=model, tokenizer=tokenizer, info=get_model(), sha256="tiny", precision="fp32", device="cpu")


def stored_evaluation(store, prompt_id, task, examples, correct, *, ci=(0.0, 1.0), output="out"):
    """An evaluation written straight into the history, as a finished llama.cpp run would leave it (model 'm',
    Q4_1, direct, test split): one result per example, right where ``correct[i]`` is true."""
    ev = store.create_evaluation(
        prompt_id=prompt_id,
        task_id=task["id"],
        split="test",
        model_id="m",
        model_sha256="x",
        backend="llamacpp",
        quantization="Q4_1",
        mode="direct",
        settings={},
        n=len(examples),
    )
    for ex, ok in zip(examples, correct):
        store.add_result(ev, ex["id"], f"{ev}-{ex['id']}", output, ex["answer"] if ok else "?", bool(ok), 0.0)
    n_ok = sum(bool(ok) for ok in correct)
    store.finish_evaluation(
        ev, n=len(examples), correct=n_ok, accuracy=n_ok / len(examples), ci_low=ci[0], ci_high=ci[1]
    )
    return ev


def write_reviews_csv(path, n=20):
    """A small two-label CSV task (goal, target) that the default model can answer."""
    path.write_text(
        "goal,target\n"
        + "".join(
            f"The film was {'wonderful and moving' if i % 2 else 'dull and far too long'} ({i}).,"
            f"{'positive' if i % 2 else 'negative'}\n"
            for i in range(n)
        )
    )
    return path


def assert_same_answers_as_llama(project_dir, llama, prompt, task_name, limit):
    """The first evaluation stored in the project at ``project_dir`` (written by another process: the edge core,
    the bundle) predicted what this process's llama.cpp model predicts for the same prompt and test examples."""
    from toolkit.evaluate import EvalSettings, predict
    from toolkit.layout import ChatLayout
    from toolkit.project import open_project

    project = open_project(project_dir)
    try:
        task = project.store.find_task(project.id, task_name)
        spec = project.store.task_spec(task)
        ev = project.store.evaluations(prompt_id=1)[0]
        stored = {r["example_id"]: r["predicted"] for r in project.store.example_results(ev["id"])}
        layout = ChatLayout(llama.chat_template, llama.bos_token, llama.eos_token)
        examples = project.store.examples(task["id"], "test", limit=limit)
        assert examples
        for ex in examples:
            assert stored[ex["id"]] == predict(llama, layout, spec, prompt, ex["input"], EvalSettings())[1]
    finally:
        project.close()
