"""Models already on the machine: fake Ollama, LM Studio and Hugging Face cache layouts in a temporary home (tiny
real files in each tool's own folder and manifest shapes), read by `models find` and added by `models add`."""

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli import cli
from toolkit.discover import find_models, resolve, suggested_id
from toolkit.errors import ConfigError, ModelFileError
from toolkit.models import get_model, remove_model, user_manifest_dir, verified_gguf

CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


class Ran:
    """A CLI result whose output has its line wrapping undone (a message is searched as one line)."""

    def __init__(self, res):
        self.exit_code, self.output = res.exit_code, " ".join(res.output.split())


def invoke(args):
    return Ran(CliRunner().invoke(cli, args, env={"COLUMNS": "250"}))


def tiny_gguf(path: Path, arch: str = "llama", template: str | None = CHATML, ftype: int = 1) -> Path:
    """A small but complete GGUF file (header, metadata, one tensor), as a converter writes one."""
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_file_type(ftype)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(8, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ollama_model(root: Path, name: str, tag: str, gguf: Path, namespace=("registry.ollama.ai", "library")) -> Path:
    """Ollama's store: the GGUF as blobs/sha256-<hex>, a Docker v2 manifest naming it and its other layers."""
    digest = sha256(gguf)
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    os.replace(gguf, blobs / f"sha256-{digest}")
    config = json.dumps({"model_format": "gguf", "model_family": "llama", "file_type": "F16"}).encode()
    template = b"{{ .Prompt }}"
    layers = [{"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": 1}]
    for media, data in (("application/vnd.ollama.image.template", template),):
        d = hashlib.sha256(data).hexdigest()
        (blobs / f"sha256-{d}").write_bytes(data)
        layers.append({"mediaType": media, "digest": f"sha256:{d}", "size": len(data)})
    cd = hashlib.sha256(config).hexdigest()
    (blobs / f"sha256-{cd}").write_bytes(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": f"sha256:{cd}"},
        "layers": layers,
    }
    path = root / "manifests" / namespace[0] / namespace[1] / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return blobs / f"sha256-{digest}"


def hf_cache_repo(cache: Path, repo: str, files: dict[str, bytes], commit: str = "a" * 40) -> Path:
    """The hub cache: models--owner--name/{blobs,refs/main,snapshots/<commit>/} with snapshot files linked to
    blobs (a large file's blob is named by its sha256)."""
    base = cache / ("models--" + repo.replace("/", "--"))
    (base / "blobs").mkdir(parents=True, exist_ok=True)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(blob, snap))
    return snap


def safetensors_bytes() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return len(header).to_bytes(8, "little") + header + b"\0" * 8


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A temporary home, with every model-store variable cleared (so the user's real stores are never read)."""
    for var in ("OLLAMA_MODELS", "HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    yield tmp_path / "home"
    for model_id in ("tiny-latest", "tiny2", "smol-latest", "qwen-tiny", "tiny-q8"):
        try:
            remove_model(model_id)
        except Exception:
            pass


@pytest.fixture
def stores(home, tmp_path):
    """One model in each store, plus things that must be listed as unusable."""
    ollama = home / ".ollama" / "models"
    blob = ollama_model(ollama, "tiny", "latest", tiny_gguf(tmp_path / "t1.gguf"))
    ollama_model(ollama, "mambo", "7b", tiny_gguf(tmp_path / "t2.gguf", arch="mamba"))
    ollama_model(ollama, "base", "q8", tiny_gguf(tmp_path / "t3.gguf", template=None, ftype=7), ("hf.co", "someone"))
    gone = ollama_model(ollama, "gone", "latest", tiny_gguf(tmp_path / "t4.gguf", ftype=15))
    gone.unlink()  # a manifest whose blob is missing (a pull that did not finish)
    lm = home / ".lmstudio" / "models" / "pub" / "Tiny-GGUF"
    tiny_gguf(lm / "tiny-Q8_0.gguf", ftype=7)
    tiny_gguf(lm / "mmproj-tiny.gguf")  # a vision projector: not a model
    cache = home / ".cache" / "huggingface" / "hub"
    config = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "torch_dtype": "bfloat16"}
    hf_cache_repo(
        cache,
        "Org/Qwen-Tiny",
        {
            "config.json": json.dumps(config).encode(),
            "model.safetensors": safetensors_bytes(),
            "tokenizer_config.json": json.dumps({"chat_template": CHATML}).encode(),
        },
    )
    gguf_bytes = tiny_gguf(tmp_path / "t5.gguf", ftype=15).read_bytes()
    hf_cache_repo(cache, "Org/Tiny-GGUF", {"tiny.Q4_K_M.gguf": gguf_bytes}, commit="b" * 40)
    return {"blob": blob, "ollama": ollama, "lm": lm, "cache": cache}


def test_find_reads_each_tools_layout(stores):
    found = {f.ref: f for f in find_models()}
    assert set(found) == {
        "ollama:tiny:latest",
        "ollama:mambo:7b",
        "ollama:hf.co/someone/base:q8",
        "ollama:gone:latest",
        "lmstudio:pub/Tiny-GGUF/tiny-Q8_0.gguf",
        "hf:Org/Qwen-Tiny",
        "hf:Org/Tiny-GGUF/tiny.Q4_K_M.gguf",
    }
    tiny = found["ollama:tiny:latest"]
    assert (tiny.kind, tiny.architecture, tiny.quantization, tiny.instruct, tiny.supported) == (
        "gguf",
        "llama",
        "F16",
        True,
        True,
    )
    assert tiny.path == str(stores["blob"].resolve()) and tiny.sha256 == sha256(stores["blob"])
    assert tiny.size_bytes == stores["blob"].stat().st_size  # measured, not read from a name or a manifest
    assert not found["ollama:mambo:7b"].supported and found["ollama:mambo:7b"].architecture == "mamba"
    base = found["ollama:hf.co/someone/base:q8"]
    assert (base.instruct, base.quantization, base.supported) == (False, "Q8_0", True)
    assert found["ollama:gone:latest"].problem == "blob missing"
    lm = found["lmstudio:pub/Tiny-GGUF/tiny-Q8_0.gguf"]
    assert (lm.quantization, lm.supported) == ("Q8_0", True)
    qwen = found["hf:Org/Qwen-Tiny"]
    assert (qwen.kind, qwen.architecture, qwen.quantization, qwen.instruct) == ("hf", "qwen2", "bfloat16", True)
    hg = found["hf:Org/Tiny-GGUF/tiny.Q4_K_M.gguf"]
    assert hg.quantization == "Q4_K_M" and hg.sha256 == sha256(Path(hg.path))  # the blob's name is its hash


def test_find_follows_each_tools_environment(home, tmp_path, monkeypatch):
    ollama_model(tmp_path / "elsewhere" / "ollama", "moved", "1b", tiny_gguf(tmp_path / "a.gguf"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "elsewhere" / "ollama"))
    hf_cache_repo(tmp_path / "hfhome" / "hub", "Org/Tiny-GGUF", {"x.gguf": tiny_gguf(tmp_path / "b.gguf").read_bytes()})
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    lm_home = tmp_path / "lmhome"
    tiny_gguf(tmp_path / "lmdl" / "p" / "r" / "m.gguf")
    lm_home.mkdir()
    (lm_home / "settings.json").write_text(json.dumps({"downloadsFolder": str(tmp_path / "lmdl")}))
    (home / ".lmstudio-home-pointer").write_text(str(lm_home))
    refs = {f.ref for f in find_models()}
    assert refs == {"ollama:moved:1b", "hf:Org/Tiny-GGUF/x.gguf", "lmstudio:p/r/m.gguf"}
    hf_cache_repo(tmp_path / "hubcache", "Org/Other", {"y.gguf": tiny_gguf(tmp_path / "c.gguf").read_bytes()})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))  # wins over HF_HOME, as in huggingface_hub
    assert "hf:Org/Other/y.gguf" in {f.ref for f in find_models()}


def test_find_in_a_folder_and_the_cli(stores, tmp_path):
    tiny_gguf(tmp_path / "mine" / "deep" / "m.gguf")
    res = invoke(["models", "find", str(tmp_path / "mine")])
    assert res.exit_code == 0, res.output
    assert "ollama:tiny:latest" in res.output and str(tmp_path / "mine" / "deep" / "m.gguf") in res.output
    assert "mambo" not in res.output and "2 more cannot be used" in res.output
    res = invoke(["models", "find", "--all", "--json", "--source", "ollama"])
    rows = json.loads(res.output)
    assert {r["ref"] for r in rows} == {
        "ollama:tiny:latest",
        "ollama:mambo:7b",
        "ollama:hf.co/someone/base:q8",
        "ollama:gone:latest",
    }
    assert {r["ref"]: r["supported"] for r in rows}["ollama:mambo:7b"] is False


def test_add_references_the_file_and_says_when_it_moves_or_changes(stores, tmp_path):
    before = sum(p.stat().st_size for p in Path(user_manifest_dir()).parent.rglob("*") if p.is_file())
    res = invoke(["models", "add", "ollama:tiny:latest"])
    assert res.exit_code == 0, res.output
    info = get_model("tiny-latest")
    assert Path(info.gguf_path_str) == stores["blob"].resolve() and info.origin == "ollama:tiny:latest"
    assert info.gguf_sha256 == sha256(stores["blob"]) and info.family == "llama"
    after = sum(p.stat().st_size for p in Path(user_manifest_dir()).parent.rglob("*") if p.is_file())
    assert after - before < 2000  # a manifest, not a copy
    assert verified_gguf(info)[1] == info.gguf_sha256

    # changed in place: the hash check says so
    data = bytearray(stores["blob"].read_bytes())
    data[-1] ^= 1
    stores["blob"].write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupt or was replaced"):
        verified_gguf(get_model("tiny-latest"), fresh=True)

    # re-pulled: Ollama now keeps the model in another blob, and the old one is gone
    stores["blob"].unlink()
    new = ollama_model(stores["ollama"], "tiny", "latest", tiny_gguf(tmp_path / "new.gguf", ftype=7))
    with pytest.raises(ModelFileError) as exc:
        get_model("tiny-latest").gguf_path()
    assert f"now keeps ollama:tiny:latest at {new.resolve()}" in str(exc.value)
    assert "gradprompt models add tiny-latest --from ollama:tiny:latest" in str(exc.value)

    # removed from Ollama altogether
    new.unlink()
    (stores["ollama"] / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "latest").unlink()
    res = invoke(["models", "list"])
    assert res.exit_code == 0 and "no longer there" in res.output and "Traceback" not in res.output
    res = invoke(["models", "info", "tiny-latest", "--hash"])
    assert res.exit_code != 0 and "no longer there" in res.output and "Traceback" not in res.output


def test_add_from_each_store_and_refusals(stores):
    res = invoke(["models", "add", "tiny2", "--from", "lmstudio:pub/Tiny-GGUF/tiny-Q8_0.gguf"])
    assert res.exit_code == 0, res.output
    assert get_model("tiny2").quantization == "Q8_0"
    res = invoke(["models", "add", "hf:Org/Qwen-Tiny"])
    assert res.exit_code == 0, res.output
    info = get_model("qwen-tiny")
    assert info.hf_path.endswith("b" * 0 + "a" * 40) and info.family == "qwen2"
    res = invoke(["models", "add", "ollama:mambo:7b"])
    assert res.exit_code != 0 and "'mamba' is not one gradprompt supports" in res.output
    assert "Qwen 2.5" in res.output and "Gemma 3" in res.output and "Traceback" not in res.output
    for bad, says in (
        ("ollama:nothing:here", "no such model in Ollama's store"),
        ("ollama:gone:latest", "ollama pull gone:latest"),
        ("lmstudio:pub/x.gguf", "PUBLISHER/REPO/FILE.gguf"),
        ("hf:Org/Missing", "not in the Hugging Face cache"),
        ("hf:Org/Tiny-GGUF", "use hf:Org/Tiny-GGUF/tiny.Q4_K_M.gguf"),
        ("ollama:../../etc:x", "not an Ollama model name"),
    ):
        res = invoke(["models", "add", "x-model", "--from", bad])
        assert res.exit_code != 0 and says in res.output and "Traceback" not in res.output, (bad, res.output)
    res = invoke(["models", "add", "x", "--from", "ollama:tiny:latest", "--gguf", "f.gguf"])
    assert res.exit_code != 0 and "not both" in res.output


@pytest.mark.slow  # the real default model in llama.cpp
def test_an_ollama_model_runs_in_llama_cpp(home, tmp_path):
    """The default model's GGUF, stored as Ollama stores it, added by reference: the same tokens and logits."""
    import numpy as np

    from toolkit.llamacpp import LlamaCppModel

    ollama = home / ".ollama" / "models"
    src = get_model().gguf_path()
    copy = tmp_path / "smol.gguf"
    copy.symlink_to(src)  # (os.replace moves the link into the store; the blob then points at the real file)
    ollama_model(ollama, "smol", "latest", copy)
    res = invoke(["models", "add", "ollama:smol:latest"])
    assert res.exit_code == 0, res.output
    info = get_model("smol-latest")
    assert info.gguf_sha256 == get_model().gguf_sha256
    a, b = LlamaCppModel(info, n_ctx=256), LlamaCppModel(get_model(), n_ctx=256)
    text = "<|im_start|>user\nIs the sky blue?<|im_end|>\n<|im_start|>assistant\n"
    assert a.encode(text) == b.encode(text) and "<|im_start|>" in a.chat_template
    assert np.allclose(a.next_logits(a.encode(text)), b.next_logits(b.encode(text)))


def test_references_and_ids():
    assert suggested_id("ollama:llama3.2:1b") == "llama3.2-1b"
    assert suggested_id("ollama:hf.co/bartowski/Qwen2.5-0.5B-GGUF:Q4_K_M") == "qwen2.5-0.5b-gguf-q4_k_m"
    assert suggested_id("ollama:phi4-mini") == "phi4-mini-latest"
    assert suggested_id("hf:HuggingFaceTB/SmolLM2-135M-Instruct") == "smollm2-135m-instruct"
    assert suggested_id("lmstudio:lmstudio-community/x/Llama-3.2-1B-Q8_0.gguf") == "llama-3.2-1b-q8_0"
    with pytest.raises(ConfigError):
        resolve("docker:foo")
