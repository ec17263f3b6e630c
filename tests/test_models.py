import pytest

from toolkit.errors import ConfigError, ModelFileError, ModelNotFoundError
from toolkit.models import add_model, file_sha256, get_model, list_models, remove_model, verified_gguf


def test_builtin_models_and_default():
    ids = [m.id for m in list_models()]
    assert ids[0] == "smollm2-135m" and "gemma3-270m" in ids
    assert get_model().id == "smollm2-135m"
    with pytest.raises(ModelNotFoundError, match="Known models"):
        get_model("nope")


def test_default_model_file_verifies():
    path, digest = verified_gguf(get_model())
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert digest == get_model().gguf_sha256


def test_add_hash_verify_remove(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 100)
    info = add_model("mine", gguf=str(gguf))
    assert info.gguf_sha256 == file_sha256(gguf) and not info.builtin
    assert verified_gguf(info)[1] == info.gguf_sha256
    gguf.write_bytes(b"GGUF" + b"\1" * 100)  # the file changes under us
    with pytest.raises(ModelFileError, match="corrupt or was replaced"):
        verified_gguf(get_model("mine"))
    with pytest.raises(ConfigError, match="already exists"):
        add_model("mine", gguf=str(gguf))
    remove_model("mine")
    assert "mine" not in [m.id for m in list_models()]


def test_add_refuses_non_gguf_and_builtin_removal(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        add_model("bad", gguf=str(bad))
    with pytest.raises(ConfigError, match="cannot be removed"):
        remove_model("smollm2-135m")


def test_a_chat_template_written_in_the_manifest_is_used_by_both_runtimes(llama, real_tm):
    """For model files without a template (the packaged Gemma GGUF): the manifest's own template wins."""
    import dataclasses

    from toolkit.engine.torch_backend import TorchModel
    from toolkit.layout import ChatLayout
    from toolkit.llamacpp import LlamaCppModel

    gemma = get_model("gemma3-270m")  # only the manifest is read: the model package need not be installed
    before, after = ChatLayout(gemma.template_for(""), "<bos>", "<eos>").split("Is it good?")
    assert before == "<bos><start_of_turn>user\nIs it good?\n\n"
    assert after == "<end_of_turn>\n<start_of_turn>model\n"
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}{% if add_generation_prompt %} [bot]{% endif %}"
    info = dataclasses.replace(get_model(), chat_template=template)
    assert LlamaCppModel(info, n_ctx=256).chat_template == template
    assert TorchModel(model=real_tm.model, tokenizer=real_tm.tokenizer, info=info, sha256=real_tm.sha256,
                      precision="fp32", device="cpu").chat_template == template
    assert llama.chat_template == get_model().template_for(llama.llm.metadata["tokenizer.chat_template"])
    assert "<|im_start|>" in llama.chat_template  # "gguf": the file's own template


def test_adding_a_gguf_without_a_chat_template_warns_and_takes_one(tmp_path):
    import gguf as gguf_py
    from click.testing import CliRunner

    from toolkit.cli import cli

    path = tmp_path / "bare.gguf"  # metadata only: enough for registration
    writer = gguf_py.GGUFWriter(str(path), "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    res = CliRunner().invoke(cli, ["models", "add", "bare-one", "--gguf", str(path)])
    assert res.exit_code == 0 and "carries no chat template" in res.output, res.output
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<bot>")
    res = CliRunner().invoke(cli, ["models", "add", "bare-two", "--gguf", str(path), "--chat-template-file", str(template)])
    assert res.exit_code == 0 and "carries no chat template" not in res.output, res.output
    assert get_model("bare-two").template_for("") == template.read_text()
    bad = tmp_path / "bad.jinja"
    bad.write_text("just text")
    res = CliRunner().invoke(cli, ["models", "add", "bare-three", "--gguf", str(path), "--chat-template-file", str(bad)])
    assert res.exit_code == 1 and "not a Jinja template" in res.output
    from toolkit.models import gguf_chat_template

    assert gguf_chat_template(get_model().gguf_path()).startswith("{% for message in messages %}")
    remove_model("bare-one"), remove_model("bare-two")
