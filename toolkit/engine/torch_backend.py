"""Loading a model for torch: from the GGUF (dequantized, then cached as safetensors) or an HF folder.

Precision: ``fp32``, ``bf16``, ``fp16``, ``8bit``, ``4bit`` (bitsandbytes nf4); device ``cpu`` or ``cuda``.
``auto`` picks fp32 on the CPU and bf16 on CUDA. Nothing touches the network.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelFileError
from ..models import ModelInfo, offline_env, verified_gguf
from ..paths import cache_dir

# transformers 5.x renames the model's `past_key_values` argument; the engine passes it by that name (which
# every supported version accepts), so the deprecation notice is ours to handle, not the user's to read.
warnings.filterwarnings("ignore", message=r".*`past_key_values` is deprecated", category=FutureWarning)

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "8bit", "4bit")


@dataclass
class TorchModel:
    model: Any
    tokenizer: Any
    info: ModelInfo
    sha256: str
    precision: str
    device: str

    @property
    def chat_template(self) -> str:
        return self.info.template_for(self.tokenizer.chat_template or "")

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with special tokens parsed and no BOS added (the template adds it)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"Unknown device {device!r}: use cpu, cuda or auto.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA GPU. Use --device cpu.")
    return device


def resolve_precision(precision: str, device: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    return precision


CACHE_FORMAT = 2  # 2: config names the architecture; a tied output matrix is stored under the embedding's name


def converted_dir(info: ModelInfo, sha256: str) -> Path:
    return cache_dir() / "torch" / f"{info.id}-{sha256[:16]}"


def _cache_errors() -> tuple[type[BaseException], ...]:
    """What loading a damaged converted copy raises (a truncated safetensors file, a missing or cut tokenizer)."""
    errors: list[type[BaseException]] = [OSError, ValueError, EOFError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:
        pass
    return tuple(errors)


CACHE_ERRORS = _cache_errors()


def _head_dim_from_gguf(config, gguf_path: Path) -> None:
    """transformers' GGUF reader leaves ``head_dim`` at the config class's default (Qwen 3: 128) where the file
    says otherwise (``ARCH.attention.key_length``); the weights then do not fit. Take it from the file."""
    if not hasattr(config, "head_dim"):
        return
    import gguf as gguf_py

    fields = gguf_py.GGUFReader(str(gguf_path)).fields
    arch = fields["general.architecture"].contents() if "general.architecture" in fields else ""
    field = fields.get(f"{arch}.attention.key_length")
    if field is not None:
        config.head_dim = int(field.contents())


def _convert_gguf(info: ModelInfo, gguf_path: Path, sha256: str) -> Path:
    """Dequantize the GGUF once through transformers and cache it as safetensors + tokenizer files."""
    out = converted_dir(info, sha256)
    try:
        if json.loads((out / "gradprompt.json").read_text()).get("format") == CACHE_FORMAT:
            return out
    except (OSError, ValueError):
        pass
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ..files import partial_path, remove_stale_partials

    remove_stale_partials(out)  # left by a conversion that was killed
    tmp = partial_path(out)
    # transformers' GGUF reader draws its own progress bar on stderr; keep the user's terminal clean.
    with contextlib.redirect_stderr(io.StringIO()):
        tokenizer = AutoTokenizer.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, local_files_only=True
        )
        config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, local_files_only=True)
        _head_dim_from_gguf(config, gguf_path)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, local_files_only=True, dtype="float32", config=config
        )
    # A GGUF-loaded model refuses save_pretrained (it is marked as quantized); its weights are plain
    # dequantized float tensors, so save the config and the weights ourselves, as save_pretrained would:
    # a tied output matrix is stored once under the input embedding's name (what llama.cpp's converter reads).
    from safetensors.torch import save_file

    tmp.mkdir(parents=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.architectures = [type(model).__name__]  # the folder is then a complete HF model (converters need it)
    config.save_pretrained(str(tmp))
    state = model.state_dict()
    tied = getattr(model, "_tied_weights_keys", None) or {}
    if getattr(config, "tie_word_embeddings", False):
        for name in tied if isinstance(tied, (list, tuple)) else tied.keys():
            if name in state:
                del state[name]
    seen: dict[int, str] = {}
    for name in list(state):  # any other shared storage: keep the first name only
        ptr = state[name].data_ptr()
        if ptr in seen:
            del state[name]
        else:
            seen[ptr] = name
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(tmp))
    (tmp / "gradprompt.json").write_text(
        json.dumps({"source": str(gguf_path), "sha256": sha256, "format": CACHE_FORMAT})
    )
    try:  # another process may have finished the same conversion first: then its copy stands (it may be in use)
        if json.loads((out / "gradprompt.json").read_text()).get("format") == CACHE_FORMAT:
            shutil.rmtree(tmp, ignore_errors=True)
            return out
    except (OSError, ValueError):
        pass
    shutil.rmtree(out, ignore_errors=True)  # an incomplete or older cache
    try:
        os.replace(tmp, out)
    except OSError:  # a concurrent conversion put its complete copy there between the two lines above
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def quiet_transformers() -> None:
    """No progress bars or warnings from transformers/huggingface_hub on the user's terminal."""
    import logging

    import transformers

    transformers.utils.logging.set_verbosity_error()
    # bitsandbytes' CPU backend warns that an optional kernels package is missing; it falls back by itself.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    transformers.utils.logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def prepare_for_gradients(model) -> int:
    """Keep bitsandbytes 4-bit layers on their differentiable path; returns how many layers were changed.

    On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight on the first no-grad forward in eval mode
    and from then on multiplies with ``gemv_4bit``, which has no backward: gradients through it come out
    silently wrong (measured: cosine 0.93 against the same weights in fp32). The engine needs exact
    gradients, so repacking is turned off (the loader and the engine call this before any forward) and a
    weight that was already repacked is converted back (bitsandbytes' inverse; close but not bit-exact).
    """
    changed = 0
    for module in model.modules():
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if weight is not None and state is not None and getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
        changed += 1
    return changed


def load_torch_model(info: ModelInfo, precision: str = "auto", device: str = "auto") -> TorchModel:
    from ..errors import require

    require("torch", "transformers", what="Loading a model for torch")
    offline_env()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()

    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    if info.hf_path:
        folder = Path(info.hf_path).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelFileError(f"Model {info.id!r}: the folder {folder} is gone or incomplete.{info.moved_hint()}")
        sha256 = "hf:" + folder.name
    else:
        gguf_path, sha256 = verified_gguf(info)
        folder = _convert_gguf(info, gguf_path, sha256)
    # Offline and safe by construction: local files only, safetensors only (never a pickle), no model code.
    kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True, "trust_remote_code": False}
    if precision in ("8bit", "4bit"):
        try:
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise ConfigError("8bit/4bit need a transformers with BitsAndBytesConfig.") from None
        require("bitsandbytes", what=f"--precision {precision}")
        if precision == "4bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": device}
        kwargs["dtype"] = torch.float32
    else:
        kwargs["dtype"] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def load(folder: Path):
        return (
            AutoTokenizer.from_pretrained(str(folder), local_files_only=True),
            AutoModelForCausalLM.from_pretrained(str(folder), **kwargs),
        )

    try:
        tokenizer, model = load(folder)
    except CACHE_ERRORS as exc:
        if info.hf_path:  # the user's own folder: never touched
            raise ModelFileError(f"Could not load {info.id!r} for torch from {folder}: {exc}") from None
        # gradprompt's own converted copy is damaged (truncated weights, a tokenizer file gone): convert again
        shutil.rmtree(folder, ignore_errors=True)
        folder = _convert_gguf(info, gguf_path, sha256)
        try:
            tokenizer, model = load(folder)
        except CACHE_ERRORS as exc:
            raise ModelFileError(f"Could not load {info.id!r} for torch from {folder}: {exc}") from None
    if precision not in ("8bit", "4bit"):
        model = model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    prepare_for_gradients(model)
    return TorchModel(model=model, tokenizer=tokenizer, info=info, sha256=sha256, precision=precision, device=device)
