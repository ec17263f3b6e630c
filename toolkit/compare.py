"""The quantization gap: score prompts across runtimes and quantizations in one call.

A runtime is ``llamacpp:MODEL`` (the model's GGUF through llama.cpp) or ``torch:MODEL:PRECISION``
(fp32, bf16, fp16, 8bit, 4bit). Every cell is an evaluation stored in the history (and cached per example).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ConfigError
from .evaluate import (
    EvalReport,
    EvalSettings,
    cache_key,
    evaluate_prompt,
    prompt_calibration,
    run_evaluation,
    template_key,
)
from .models import get_model


@dataclass
class CompareResult:
    prompts: list[dict]
    runtimes: list[str]
    cells: dict = field(default_factory=dict)  # (prompt_id, runtime) -> EvalReport

    def lost_improvements(self) -> list[tuple[int, str]]:
        """(prompt, runtime) where a prompt beats the first prompt on the first runtime but not on this one."""
        if len(self.prompts) < 2 or not self.runtimes:
            return []
        base_p, ref = self.prompts[0]["id"], self.runtimes[0]
        out = []
        for p in self.prompts[1:]:
            if self.cells[(p["id"], ref)].accuracy <= self.cells[(base_p, ref)].accuracy:
                continue
            for rt in self.runtimes[1:]:
                if self.cells[(p["id"], rt)].accuracy <= self.cells[(base_p, rt)].accuracy:
                    out.append((p["id"], rt))
        return out


def parse_runtime(spec: str) -> tuple[str, str, str]:
    parts = spec.split(":")
    if parts[0] == "llamacpp" and len(parts) == 2:
        return "llamacpp", parts[1], "gguf"
    if parts[0] == "torch" and len(parts) == 3:
        return "torch", parts[1], parts[2]
    raise ConfigError(f"Runtime {spec!r}: use llamacpp:MODEL or torch:MODEL:PRECISION (fp32, bf16, fp16, 8bit, 4bit).")


def evaluate_prompt_torch(
    store,
    *,
    tm,
    task_row: dict,
    prompt_row: dict,
    split: str = "test",
    settings: EvalSettings | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
    batch_size: int = 16,
) -> EvalReport:
    """Score a prompt with a loaded torch model (same layout and label rule as llama.cpp and the optimizer).

    Examples run in batches; each batch's results are stored (and cached per example) as soon as it is done,
    so an interrupted evaluation continues from the last finished batch.
    """
    from .engine.config import GreaterConfig, Item
    from .engine.parts import build_predictor

    settings = settings or EvalSettings()
    spec = store.task_spec(task_row)
    calibration = prompt_calibration(prompt_row, spec)
    examples = store.examples(task_row["id"], split, limit=limit)
    config = GreaterConfig(mode=settings.mode, max_new_tokens=settings.max_new_tokens, steps=1, batch_size=batch_size)
    from .layout import demos_from_json

    predictor = build_predictor(tm, spec, config, demos=demos_from_json(prompt_row.get("demos")))
    device = predictor.forward.device
    ev_id = store.create_evaluation(
        prompt_id=prompt_row["id"],
        task_id=task_row["id"],
        split=split,
        model_id=tm.info.id,
        model_sha256=tm.sha256,
        backend="torch",
        quantization=tm.precision,
        mode=settings.mode,
        settings={
            **json.loads(settings.key()),
            "limit": limit,
            "device": str(device),
            **({"calibration": calibration.to_dict()} if calibration else {}),
        },
        n=len(examples),
    )
    # CPU and GPU arithmetic differ; another chat template than the weights' own gives other answers
    model_key = f"{tm.sha256}:torch:{tm.precision}:{device.type}" + template_key(tm)
    keyed = [
        (ex, cache_key(prompt_row["text"], model_key, settings, spec, ex, calibration, prompt_row.get("demos")))
        for ex in examples
    ]
    prompt_ids = predictor.text.encode(prompt_row["text"])

    def predict_batch(batch: list[dict]) -> list[tuple[str, str | None]]:
        items = [Item(ex["input"], ex["answer"]) for ex in batch]
        preds = predictor.predict_items(
            prompt_ids, items, answer_tokens=settings.answer_tokens, calibration=calibration
        )
        chains = predictor.decoder.chains(prompt_ids, items)  # cached by predict_items
        return [
            ((predictor.text.decode(chain).strip() + " " + str(pred)).strip(), pred)
            for chain, (_, pred) in zip(chains, preds)
        ]

    return run_evaluation(
        store,
        ev_id,
        prompt_text=prompt_row["text"],
        spec=spec,
        keyed=keyed,
        predict_batch=predict_batch,
        batch_size=config.batch_size,
        progress=progress,
        stop=stop,
    )


def compare_prompts(
    project,
    prompt_ids: list[int],
    runtimes: list[str],
    *,
    task: str | int | None = None,
    split: str = "test",
    limit: int | None = None,
    settings: EvalSettings | None = None,
    progress: Callable[[str], None] | None = None,
    loaded: dict | None = None,
    load: Callable[[str, str, str], object] | None = None,
) -> CompareResult:
    """Evaluate every prompt on every runtime. ``loaded`` may map runtime strings to already-loaded models;
    the others are loaded with ``load(kind, model_id, precision)`` (default: from the model registry), one at
    a time, and freed after their column. Every runtime string is checked before anything loads."""
    for rt in runtimes:
        parse_runtime(rt)
    store = project.store
    prompts = [store.prompt(pid) for pid in prompt_ids]
    task_row = store.task(project.id, task if task is not None else prompts[0]["task_id"])
    result = CompareResult(prompts=prompts, runtimes=list(runtimes))
    loaded = dict(loaded or {})
    for rt in runtimes:
        kind, model_id, precision = parse_runtime(rt)
        own = rt not in loaded  # loaded here: freed after its column, so one model is in memory at a time
        if own:
            if progress:
                progress(f"loading {rt}")
            loaded[rt] = (load or load_runtime)(kind, model_id, precision)
        for p in prompts:
            if progress:
                progress(f"{rt}: prompt {p['id']}")

            def each(done, total, rt=rt, pid=p["id"]):
                if progress:
                    progress(f"{rt}: prompt {pid}, {done}/{total} examples")

            if kind == "llamacpp":
                rep = evaluate_prompt(
                    store,
                    model=loaded[rt],
                    task_row=task_row,
                    prompt_row=p,
                    split=split,
                    settings=settings,
                    limit=limit,
                    progress=each,
                )
            else:
                rep = evaluate_prompt_torch(
                    store,
                    tm=loaded[rt],
                    task_row=task_row,
                    prompt_row=p,
                    split=split,
                    settings=settings,
                    limit=limit,
                    progress=each,
                )
            result.cells[(p["id"], rt)] = rep
        if own:
            del loaded[rt]
            _free_memory()
    return result


def load_runtime(kind: str, model_id: str, precision: str):
    """The model for one runtime: llama.cpp's GGUF, or torch at ``precision``."""
    if kind == "llamacpp":
        from .llamacpp import LlamaCppModel

        return LlamaCppModel(get_model(model_id))
    from .engine.torch_backend import load_torch_model

    return load_torch_model(get_model(model_id), precision=precision)


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
