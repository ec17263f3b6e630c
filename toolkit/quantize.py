"""Make quantized GGUF variants of a model with llama.cpp's own quantizer (llama_model_quantize).

When the only GGUF is itself quantized (the default model ships as Q4_1), it is first dequantized to an F16
GGUF (gguf-py), then quantized to each asked type. Each variant is registered as a user model whose manifest
records how it was made; its precision can never exceed the source's.
"""

from __future__ import annotations

import os
from pathlib import Path

import tomli_w

from .errors import ConfigError, ModelFileError
from .models import ModelInfo, file_sha256, get_model, user_manifest_dir, verified_gguf
from .paths import cache_dir

FTYPES = {"F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_M": 12,
          "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18}


def dequantize_to_f16(src: Path, dst: Path) -> Path:
    """Write an F16 GGUF (1-D tensors stay F32) with the same metadata and tensor names as ``src``."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    tmp = dst.with_name(dst.name + ".partial")
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
    return dst


def quantize_file(src: Path, dst: Path, qtype: str, threads: int | None = None) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.nthread = threads or (os.cpu_count() or 1)
    tmp = dst.with_name(dst.name + ".partial")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.exists():
        raise ModelFileError(f"llama.cpp could not quantize {src.name} to {qtype} (code {rc}).")
    os.replace(tmp, dst)
    return dst


def make_variants(model_id: str, types: list[str]) -> list[ModelInfo]:
    """Create and register ``MODEL-qtype`` variants of a model; returns their infos (existing ones reused)."""
    unknown = [t for t in types if t.upper() not in FTYPES]
    if unknown:
        raise ConfigError(f"Unknown quantization type(s) {', '.join(unknown)}: use {', '.join(FTYPES)}.")
    base = get_model(model_id)
    src, src_sha = verified_gguf(base)
    folder = cache_dir() / "gguf-variants" / f"{base.id}-{src_sha[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    f16 = folder / f"{base.id}-F16.gguf"
    import importlib.metadata as md

    llama_version = md.version("llama-cpp-python")
    out = []
    for qtype in (t.upper() for t in types):
        variant_id = f"{base.id}-{qtype.lower()}"
        try:
            out.append(get_model(variant_id))
            continue
        except Exception:
            pass
        if not f16.exists():
            dequantize_to_f16(src, f16)
        dst = f16 if qtype == "F16" else quantize_file(f16, folder / f"{base.id}-{qtype}.gguf", qtype)
        via = (f"{base.quantization or 'GGUF'} {src.name} dequantized to F16 (gguf-py)"
               + ("" if qtype == "F16" else f", then llama_model_quantize to {qtype} (llama-cpp-python {llama_version})"))
        manifest = {
            "id": variant_id, "name": f"{base.name} {qtype}", "family": base.family, "licence": base.licence,
            "chat_template": "gguf",
            "gguf": {"path": str(dst), "sha256": file_sha256(dst), "quantization": qtype},
            "derived_from": {"model": base.id, "sha256": src_sha, "via": via},
        }
        path = user_manifest_dir() / f"{variant_id}.toml"
        path.write_text(tomli_w.dumps(manifest), encoding="utf-8")
        out.append(get_model(variant_id))
    return out
