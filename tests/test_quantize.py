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
