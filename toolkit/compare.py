"""The quantization gap: score prompts across runtimes and quantizations in one call.

A runtime is ``llamacpp:MODEL`` (the model's GGUF through llama.cpp) or ``torch:MODEL:PRECISION``
(fp32, bf16, fp16, 8bit, 4bit). Every cell is an evaluation by the one evaluation service
(:func:`toolkit.evaluation.evaluate_prompt`), stored in the history and cached per example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ConfigError
from .evaluate import EvalSettings
from .evaluation import evaluate_prompt, load_model


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
            loaded[rt] = load(kind, model_id, precision) if load else load_model(kind, model_id, precision=precision)
        for p in prompts:
            if progress:
                progress(f"{rt}: prompt {p['id']}")

            def each(done, total, rt=rt, pid=p["id"]):
                if progress:
                    progress(f"{rt}: prompt {pid}, {done}/{total} examples")

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
            result.cells[(p["id"], rt)] = rep
        if own:
            del loaded[rt]
            _free_memory()
    return result


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
