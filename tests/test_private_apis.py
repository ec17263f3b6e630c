"""The private names gradprompt relies on, checked against the installed versions, and the installed versions
against pyproject's bounds: an upgrade that moves any of them fails here, in CI, not silently for users."""

import importlib
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_llama_cpp_private_names(llama):
    import llama_cpp

    llm = llama.llm
    for name in ("_ctx", "n_tokens", "input_ids", "eval", "n_vocab", "tokenize", "detokenize"):
        assert hasattr(llm, name), name  # KV reuse in toolkit/llamacpp.py: _eval, next_logits
    for name in ("kv_cache_seq_rm", "get_logits"):
        assert callable(getattr(llm._ctx, name, None)), name
    assert callable(llama_cpp.llama_supports_gpu_offload)
    llama.next_logits(llama.encode("Is this review positive"))  # a batch of several tokens decodes
    assert llm.n_tokens == len(llama.encode("Is this review positive"))


def test_transformers_names():
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    for name in (
        "DynamicCache",
        "LogitsProcessor",
        "LogitsProcessorList",
        "BitsAndBytesConfig",
        "AutoModelForCausalLM",
        "AutoTokenizer",
    ):
        assert hasattr(transformers, name), name
    assert "llama" in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    assert callable(transformers.utils.logging.set_verbosity_error)
    assert callable(transformers.utils.logging.disable_progress_bar)


def test_bitsandbytes_names():
    pytest.importorskip("bitsandbytes")
    functional = importlib.import_module("bitsandbytes.functional")
    assert callable(functional._convert_weight_packed_for_cpu_inverse)  # torch_backend.prepare_for_gradients


def test_installed_versions_are_inside_the_bounds_and_the_lock():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        if extra not in ("all", "gemma"):
            reqs += items
    lock = {}
    for line in (ROOT / "packaging" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            lock[name.lower().replace("_", "-")] = pinned
    checked = 0
    for text in reqs:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        installed = version(req.name).split("+")[0]
        assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} is outside {req.specifier}"
        key = req.name.lower().replace("_", "-")
        assert key in lock, f"{req.name} is not in packaging/constraints.txt (run packaging/lock.sh)"
        assert req.specifier.contains(lock[key], prereleases=True), (
            f"the lock's {req.name} {lock[key]} is outside {req.specifier}"
        )
        checked += 1
    assert checked >= 15
