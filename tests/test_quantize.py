from click.testing import CliRunner

from toolkit.cli import cli
from toolkit.llamacpp import LlamaCppModel
from toolkit.models import get_model, list_models, verified_gguf


def test_quantized_variant_is_made_registered_and_runs():
    res = CliRunner().invoke(cli, ["models", "quantize", "smollm2-135m", "--to", "Q8_0"])
    assert res.exit_code == 0, res.output
    info = get_model("smollm2-135m-q8_0")
    assert info.quantization == "Q8_0" and not info.builtin
    assert "llama_model_quantize to Q8_0" in info.extra["derived_from"]["via"]
    assert info.extra["derived_from"]["sha256"] == get_model().gguf_sha256
    path, digest = verified_gguf(info)
    assert digest == info.gguf_sha256 and path.stat().st_size > get_model().gguf_path().stat().st_size
    model = LlamaCppModel(info, n_ctx=256)
    base = LlamaCppModel(get_model(), n_ctx=256)
    text = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    assert model.encode(text) == base.encode(text)
    assert len(model.generate(model.encode(text), 6)) > 0
    assert "smollm2-135m-q8_0" in [m.id for m in list_models()]
    again = CliRunner().invoke(cli, ["models", "quantize", "smollm2-135m", "--to", "Q8_0"])
    assert again.exit_code == 0  # reused, not rebuilt


def test_variant_from_a_hugging_face_folder(real_tm, tmp_path, monkeypatch):
    """A full-precision HF folder becomes an F16 GGUF through llama.cpp's converter, then a Q8_0 variant."""
    import json

    import numpy as np

    from toolkit.engine.torch_backend import converted_dir
    from toolkit.errors import ModelFileError
    from toolkit.models import add_model
    from toolkit.quantize import hf_to_gguf_f16

    src = converted_dir(real_tm.info, real_tm.sha256)  # the torch cache: a plain HF folder
    hf = tmp_path / "my-model"
    hf.mkdir()
    for item in src.iterdir():
        if item.name != "config.json":
            (hf / item.name).symlink_to(item)
    config = json.loads((src / "config.json").read_text())
    config.pop("architectures", None)  # as older caches wrote it: the architecture is inferred
    (hf / "config.json").write_text(json.dumps(config))
    add_model("mine-hf", hf=str(hf))
    try:
        LlamaCppModel(get_model("mine-hf"))
    except ModelFileError as exc:  # llama.cpp needs a GGUF: the message says how to make one
        assert "gradprompt models quantize mine-hf --to Q8_0" in str(exc)
    else:
        raise AssertionError("an HF-only model cannot run in llama.cpp")
    res = CliRunner().invoke(cli, ["models", "quantize", "mine-hf", "--to", "Q8_0"])
    assert res.exit_code == 0, res.output
    info = get_model("mine-hf-q8_0")
    assert info.quantization == "Q8_0"
    assert "converted to F16 GGUF (convert-hf-to-gguf" in info.extra["derived_from"]["via"]
    model = LlamaCppModel(info, n_ctx=256)
    base = LlamaCppModel(get_model(), n_ctx=256)
    assert "<|im_start|>" in model.chat_template  # the tokenizer's chat template came along
    text = "<|im_start|>user\nIs the sky blue? Answer yes or no.<|im_end|>\n<|im_start|>assistant\n"
    assert model.encode(text) == base.encode(text)
    a, b = model.next_logits(model.encode(text)), base.next_logits(base.encode(text))
    assert int(a.argmax()) == int(b.argmax()) and np.corrcoef(a, b)[0, 1] > 0.98  # same weights (Q4_1 -> fp32 -> Q8_0)

    monkeypatch.setenv("GRADPROMPT_CONVERTER", str(tmp_path / "nowhere"))
    try:
        hf_to_gguf_f16(hf, tmp_path / "x.gguf")
    except ModelFileError as exc:
        assert "packaging/setup.sh" in str(exc) and "convert-hf-to-gguf" in str(exc)
    else:
        raise AssertionError("a missing converter must be reported")
    assert not (tmp_path / "x.gguf").exists()
