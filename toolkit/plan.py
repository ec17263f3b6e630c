"""A cost plan before a run: time and memory estimated from the model's size, the data and the settings.

The model's shape is read from its GGUF (llama.cpp, vocabulary only: no weights are loaded) and the real
examples are tokenized, so sequence lengths are exact. Time comes from a FLOP count divided by a throughput
calibrated on the 2-core development machine (see the constants below; generation is bounded by per-token
overhead). It is an estimate: expect +-50%.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from .engine.config import GreaterConfig
from .layout import ChatLayout
from .models import ModelInfo

BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "8bit": 1.1, "4bit": 0.6}


@dataclass(frozen=True)
class Plan:
    params_millions: float
    precision: str
    device: str
    n_train: int
    mean_tokens: float
    seconds_per_step: float
    total_seconds: float
    peak_memory_mb: float
    flops_per_step: float
    assumed_gflops: float
    notes: str

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def step_range(self) -> tuple[float, float]:
        """Seconds per step as measured runs spread around the estimate (STEP_TIME_RANGE)."""
        return self.seconds_per_step * STEP_TIME_RANGE[0], self.seconds_per_step * STEP_TIME_RANGE[1]

    def describe_step(self) -> str:
        """The time per step as every face says it: the estimate and the range measured runs fell in."""
        lo, hi = self.step_range
        return f"~{self.seconds_per_step:.0f} s per step ({lo:.0f}-{hi:.0f} s in measured runs)"


# The estimate checked against measured runs: `python benchmarks/plan_check.py` (2026-12-07; SmolLM2-135M, fp32 on
# 2 CPU cores, direct mode, the default 16 training rows, 3 instruction steps on each of 4 tasks: the two shipped
# tasks, web_of_lies, formal_fallacies). The FLOP count alone read 1.75-2.64 times low (median 2.12; the longer
# the inputs, the lower: formal_fallacies 2.64), so it is scaled by the median, and every face states the range
# the measured steps fell in around the scaled estimate (0.65-1.25 of it). One model and one machine: another
# machine's matmul speed is measured at run time (measured_peak_gflops), its overheads are not.
STEP_TIME_SCALE = 2.12
STEP_TIME_RANGE = (0.65, 1.25)

_SHAPES: dict[str, dict] = {}
_PEAK: list[float] = []


def _shape(info: ModelInfo) -> dict:
    if info.hf_path and not (info.gguf_path_str or info.gguf_package):  # a Hugging Face folder alone
        path = str(info.hf_path)
        if path not in _SHAPES:
            _SHAPES[path] = _read_shape_hf(path)
        return _SHAPES[path]
    path = str(info.gguf_path())
    if path not in _SHAPES:
        _SHAPES[path] = _read_shape(path)
    return _SHAPES[path]


def _read_shape_hf(folder: str) -> dict:
    """The same shape from a Hugging Face folder's config.json (and its tokenizer, for the lengths)."""
    import json
    from pathlib import Path

    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    config = config.get("text_config", config)
    d, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    ff = int(config.get("intermediate_size") or 4 * d)
    heads = int(config.get("num_attention_heads") or 1)
    kv = int(config.get("num_key_value_heads") or heads)
    attn = d * d * 2 + 2 * d * (d * kv // max(heads, 1))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return {
        "encode": lambda text: tok(text, add_special_tokens=False)["input_ids"],
        "body_params": layers * (attn + 3 * d * ff),
        "embed_params": int(config["vocab_size"]) * d,
        "d": d,
        "layers": layers,
        "vocab": int(config["vocab_size"]),
        "template": getattr(tok, "chat_template", "") or "",
    }


def _read_shape(path: str) -> dict:
    import llama_cpp

    from .llamacpp import _silence_llama_logs

    _silence_llama_logs()
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    meta = llm.metadata
    arch = meta.get("general.architecture", "llama")
    get = lambda key, default=0: int(meta.get(f"{arch}.{key}") or default)  # noqa: E731
    d, layers, ff = get("embedding_length"), get("block_count"), get("feed_forward_length")
    heads, kv = get("attention.head_count", 1), get("attention.head_count_kv", 0) or get("attention.head_count", 1)
    vocab = llm.n_vocab()
    attn = d * d * 2 + 2 * d * (d * kv // max(heads, 1))
    body = layers * (attn + 3 * d * ff)
    return {
        "encode": lambda text: llm.tokenize(text.encode(), add_bos=False, special=True),
        "body_params": body,
        "embed_params": vocab * d,
        "d": d,
        "layers": layers,
        "vocab": vocab,
        "template": meta.get("tokenizer.chat_template", ""),
    }


def measured_peak_gflops() -> float:
    """fp32 matmul GFLOP/s on this machine (measured once per process)."""
    if _PEAK:
        return _PEAK[0]
    import torch

    a, b = torch.randn(768, 768), torch.randn(768, 768)
    a @ b
    best = 0.0
    for _ in range(8):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * 768**3 / (time.perf_counter() - t0) / 1e9)
    _PEAK.append(best)
    return best


def estimate(
    info: ModelInfo,
    inputs: list[str],
    config: GreaterConfig,
    *,
    precision: str = "fp32",
    device: str = "cpu",
    initial_prompt: str = "",
    peak_gflops: float | None = None,
) -> Plan:
    shape = _shape(info)
    layout = ChatLayout(info.template_for(shape["template"]))
    enc = shape["encode"]
    prompt_len = len(enc(initial_prompt)) if initial_prompt else 16
    lengths = []
    for text in inputs[: config.n_train]:
        before, after = layout.split(text)
        lengths.append(len(enc(before)) + prompt_len + len(enc(after)) + 20)
    n = len(lengths)
    mean_len = sum(lengths) / max(1, n)
    chain = config.max_new_tokens if config.mode == "reasoning" else 0
    seq = mean_len + chain
    P = shape["body_params"]
    if config.schedule == "improved":  # the wide search scores width + probe candidates (auto width: see search.py)
        k = (config.width or (16 if config.mode == "direct" else 4)) + config.probe
    else:
        k = config.n_grad_candidates
    flops = {
        "proposal": 2 * P * n * (mean_len - 20),
        "gradient": 4 * P * n * seq,
        # direct mode scores each candidate on the cached prefix: only the prompt's tail, the end of the turn and
        # the extractor are computed (~half the prompt + 20 tokens)
        "scoring": 2 * P * n * k * (prompt_len / 2 + 20 if chain == 0 and config.schedule == "improved" else seq),
    }
    peak = peak_gflops or (measured_peak_gflops() if device == "cpu" else 100_000.0)
    efficiency = 1.0
    # scaled by what measured runs took against the count of FLOPs (STEP_TIME_SCALE; its spread: STEP_TIME_RANGE)
    seconds = sum(flops.values()) / (peak * efficiency * 1e9) * STEP_TIME_SCALE
    if chain:
        # Greedy decoding: k candidates (plus the current prompt once) x n chains x chain tokens, batched;
        # on a CPU each decoding step of transformers' generate costs ~80 ms for a batch (calibrated on
        # benchmarks/engine.py --mode reasoning: 19.3 s/step for 8 examples and 32-token chains).
        per_token = max(0.08, 2 * P * min(n, config.batch_size) / (peak * 0.3 * 1e9))
        batches = -(-n // config.batch_size)
        seconds += (k + 1) * batches * chain * per_token
    bytes_pp = BYTES_PER_PARAM.get(precision, 4.0)
    weights_mb = (P + shape["embed_params"]) * bytes_pp / 2**20
    batch = min(n, config.batch_size)
    activations_mb = batch * seq * shape["d"] * shape["layers"] * 4 * 12 / 2**20  # kept for backward
    logits_mb = batch * (prompt_len + 4) * shape["vocab"] * 4 * 3 / 2**20
    peak_mb = 450 + weights_mb * (2 if precision in ("8bit", "4bit") else 1.3) + activations_mb + logits_mb
    notes = (
        "fp32 weights are read once more while quantizing"
        if precision in ("8bit", "4bit")
        else "weights + activations kept for the backward pass + the torch runtime"
    )
    total = seconds * config.steps
    if config.time_budget_s is not None and config.time_budget_s < total:
        total = config.time_budget_s  # no step starts after the budget (then the dev pick)
        notes += f"; the {config.time_budget_s:.0f} s budget ends the search after ~{total / seconds:.0f} steps"
    return Plan(
        params_millions=(P + shape["embed_params"]) / 1e6,
        precision=precision,
        device=device,
        n_train=n,
        mean_tokens=seq,
        seconds_per_step=seconds,
        total_seconds=total,
        peak_memory_mb=peak_mb,
        flops_per_step=sum(flops.values()),
        assumed_gflops=peak * efficiency,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------- what fits

PLAN_PRECISIONS = ("fp32", "bf16", "8bit", "4bit")  # from the most precise to the smallest
SAMPLE_INPUT = "A short example input of the kind a task holds, about forty tokens long: " * 2


def available_memory_mb(device: str) -> float | None:
    """Memory free for a run: the GPU's free memory (CUDA), else the system's available memory (Linux
    ``MemAvailable``; elsewhere the physical memory); None when it cannot be told."""
    if device == "cuda":
        try:
            import torch

            return torch.cuda.mem_get_info()[0] / 2**20
        except Exception:
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):
        return None


def plans_by_precision(info: ModelInfo, inputs: list[str], config: GreaterConfig, *, device: str, **kw) -> list[Plan]:
    """The plan at each precision (fp32, bf16, 8-bit, 4-bit) for this model, data and settings."""
    return [estimate(info, inputs, config, precision=p, device=device, **kw) for p in PLAN_PRECISIONS]


def fit_problem(plan: Plan, plans: list[Plan], available_mb: float | None) -> str:
    """ "" when ``plan`` fits in the memory free now (with a 10% margin), else what is wrong and the precision
    that would fit (or that none does)."""
    if available_mb is None or plan.peak_memory_mb <= 0.9 * available_mb:
        return ""
    where = "GPU memory free" if plan.device == "cuda" else "memory available"
    fits = [p for p in plans if p.peak_memory_mb <= 0.9 * available_mb]
    hint = (
        f"--precision {fits[0].precision} would need ~{fits[0].peak_memory_mb / 1024:.1f} GB and fits"
        if fits
        else "no precision fits: free memory, use a smaller model, or fewer --train-size/--batch-size"
    )
    return (
        f"{plan.precision} on {plan.device} needs ~{plan.peak_memory_mb / 1024:.1f} GB at its peak, and this machine "
        f"has {available_mb / 1024:.1f} GB of {where}: {hint}."
    )
