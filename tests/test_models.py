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


def tiny_gguf(path):
    """A small valid GGUF file (one 16x16 float tensor)."""
    import gguf as gguf_py
    import numpy as np

    w = gguf_py.GGUFWriter(str(path), "llama")
    w.add_tensor("t", np.arange(256, dtype=np.float32).reshape(16, 16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_add_hash_verify_remove(tmp_path):
    gguf = tiny_gguf(tmp_path / "m.gguf")
    info = add_model("mine", gguf=str(gguf))
    assert info.gguf_sha256 == file_sha256(gguf) and not info.builtin
    assert verified_gguf(info)[1] == info.gguf_sha256
    data = bytearray(gguf.read_bytes())
    data[-5] ^= 0xFF  # the file changes under us (a weight byte: it still parses)
    gguf.write_bytes(bytes(data))
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
    assert (
        TorchModel(
            model=real_tm.model,
            tokenizer=real_tm.tokenizer,
            info=info,
            sha256=real_tm.sha256,
            precision="fp32",
            device="cpu",
        ).chat_template
        == template
    )
    assert llama.chat_template == get_model().template_for(llama.llm.metadata["tokenizer.chat_template"])
    assert "<|im_start|>" in llama.chat_template  # "gguf": the file's own template


@pytest.mark.slow  # writes a GGUF file
def test_adding_a_gguf_without_a_chat_template_warns_and_takes_one(tmp_path):
    import gguf as gguf_py
    from click.testing import CliRunner

    from toolkit.cli import cli

    path = tiny_gguf(tmp_path / "bare.gguf")  # no tokenizer metadata, so no chat template
    assert gguf_py.GGUFReader(str(path)).fields.get("tokenizer.chat_template") is None
    res = CliRunner().invoke(cli, ["models", "add", "bare-one", "--gguf", str(path)])
    assert res.exit_code == 0 and "carries no chat template" in res.output, res.output
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<bot>")
    res = CliRunner().invoke(
        cli, ["models", "add", "bare-two", "--gguf", str(path), "--chat-template-file", str(template)]
    )
    assert res.exit_code == 0 and "carries no chat template" not in res.output, res.output
    assert get_model("bare-two").template_for("") == template.read_text()
    bad = tmp_path / "bad.jinja"
    bad.write_text("just text")
    res = CliRunner().invoke(
        cli, ["models", "add", "bare-three", "--gguf", str(path), "--chat-template-file", str(bad)]
    )
    assert res.exit_code == 1 and "not a Jinja template" in res.output
    from toolkit.models import gguf_chat_template

    assert gguf_chat_template(get_model().gguf_path()).startswith("{% for message in messages %}")
    remove_model("bare-one"), remove_model("bare-two")


def test_add_refuses_truncated_or_broken_gguf_and_pickled_hf_folders(tmp_path):
    good = tiny_gguf(tmp_path / "good.gguf").read_bytes()
    for name, data in (
        ("five.gguf", b"GGUF\x03"),
        ("half.gguf", good[: len(good) // 2]),
        ("short.gguf", good[:-64]),
        ("zeros.gguf", b"GGUF" + b"\0" * 100),
    ):
        f = tmp_path / name
        f.write_bytes(data)
        with pytest.raises(ModelFileError, match="GGUF file"):
            add_model("broken", gguf=str(f))
        assert "broken" not in [m.id for m in list_models()]  # nothing registered
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelFileError, match="safetensors only"):
        add_model("pickled", hf=str(folder))


def test_a_hash_check_reads_the_file_even_when_size_and_mtime_are_restored(tmp_path):
    import os

    gguf = tiny_gguf(tmp_path / "m.gguf")
    info = add_model("touched", gguf=str(gguf))
    st = os.stat(gguf)
    data = bytearray(gguf.read_bytes())
    data[-3] ^= 0x01
    gguf.write_bytes(bytes(data))
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns))  # `touch -d`: same size, same mtime
    assert verified_gguf(info)[1] == info.gguf_sha256  # the everyday cached check is fooled...
    with pytest.raises(ModelFileError, match="corrupt or was replaced"):
        verified_gguf(info, fresh=True)  # ...the one `models info --hash` runs is not
    remove_model("touched")


def test_models_list_says_what_is_not_installed_and_how_to_get_it(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from toolkit.cli import cli

    monkeypatch.setenv("GRADPROMPT_HOME", str(tmp_path / "home"))
    manifests = tmp_path / "home" / "models"
    manifests.mkdir(parents=True)
    (manifests / "absent.toml").write_text(
        'id = "absent-1b"\nname = "Absent"\n[gguf]\npackage = "no_such_package_gradprompt_test"\n'
        'file = "absent.gguf"\ninstall = "pip install \'gradprompt[absent]\'"\n'
    )
    res = CliRunner().invoke(cli, ["models", "list"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "absent-1b: pip install 'gradprompt[absent]'" in res.output  # the [absent] extra is not eaten
    assert not get_model("absent-1b").installed and get_model().installed


def test_models_list_never_cuts_an_id_in_a_narrow_terminal(tmp_path, monkeypatch):
    """CI's 80 columns with a not-installed model once cut the id to 'smollm2-1…': ids are what users type next."""
    from click.testing import CliRunner

    from toolkit import cli as cli_module

    monkeypatch.setenv("GRADPROMPT_HOME", str(tmp_path / "home"))
    manifests = tmp_path / "home" / "models"
    manifests.mkdir(parents=True)
    (manifests / "absent.toml").write_text(
        'id = "absent-model-with-a-long-id"\nname = "Absent"\n[gguf]\npackage = "no_such_package_gradprompt_test"\n'
        'file = "absent.gguf"\n'
    )
    monkeypatch.setenv("COLUMNS", "60")
    res = CliRunner().invoke(cli_module.cli, ["models", "list"])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if line.startswith("│")]
    assert any("│ smollm2-135m " in line for line in rows), res.output
    assert any("│ absent-model-with-a-long-id " in line for line in rows), res.output
