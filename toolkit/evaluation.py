"""The evaluation service: one stored prompt version scored on a task split by a runtime, stored in the history
and cached per example.

A runtime is a loaded model behind one protocol (:class:`Runtime`), with two implementations, in the manner of
harlequin's adapters: :class:`LlamaCppRuntime` (the GGUF through llama.cpp, what a user deploys; the default)
and :class:`TorchRuntime` (the same weights through transformers at the precision the optimizer runs). The
service (:func:`evaluate_prompt`) owns what every evaluation shares: the evaluation row, the cache key and the
loop (:func:`toolkit.evaluate.run_evaluation`). A runtime owns how its answers are produced, what the row records
of it, and what tells its arithmetic apart in the cache. :func:`load_model` is where a face loads either.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .calibration import Calibration
from .errors import ClusterWorkError, ConfigError, InputTooLongError
from .evaluate import (
    SKIPPED,
    EvalReport,
    EvalSettings,
    cache_key,
    predict,
    prompt_calibration,
    prompt_layout,
    run_evaluation,
    template_key,
)
from .models import ModelInfo, get_model
from .tasks import AnswerSpec

Answers = Callable[[list[dict]], list[tuple[str, str | None]]]  # a batch of examples -> (output, predicted) each


@runtime_checkable
class Runtime(Protocol):
    """A loaded model that answers examples for the evaluation service."""

    backend: str  # as the evaluation row records it: "llamacpp" or "torch"
    model: Any  # the loaded model
    batch_size: int  # examples per call of the answers function; a stopped evaluation keeps every finished batch

    def identity(self) -> dict:
        """``model_id``, ``model_sha256`` and ``quantization`` of the evaluation row."""
        ...

    def row_settings(self) -> dict:
        """What the evaluation row records of the runtime beside the settings (offloaded layers, device)."""
        ...

    def model_key(self) -> str:
        """What the cache keys answers by: the weights' hash and whatever changes the arithmetic or the chat."""
        ...

    def answers(
        self, spec: AnswerSpec, prompt_row: dict, settings: EvalSettings, calibration: Calibration | None
    ) -> Answers:
        """The function that answers a batch of examples under the prompt version ``prompt_row``."""
        ...


class LlamaCppRuntime:
    """A :class:`~toolkit.llamacpp.LlamaCppModel` (or anything with its interface): one example per call."""

    backend = "llamacpp"
    batch_size = 1

    def __init__(self, model):
        self.model = model
        self.gpu_layers = getattr(model, "n_gpu_layers", 0)

    def identity(self) -> dict:
        m = self.model
        return {"model_id": m.info.id, "model_sha256": m.sha256, "quantization": m.info.quantization or "gguf"}

    def row_settings(self) -> dict:
        return {"gpu_layers": self.gpu_layers}

    def model_key(self) -> str:
        # GPU-offloaded layers compute slightly differently from the CPU: their results are cached apart; so are
        # the answers under a chat template other than the GGUF's own (two models can share one GGUF)
        return self.model.sha256 + (":gpu" if self.gpu_layers else "") + template_key(self.model)

    def answers(
        self, spec: AnswerSpec, prompt_row: dict, settings: EvalSettings, calibration: Calibration | None
    ) -> Answers:
        model, layout, prompt = self.model, prompt_layout(self.model, spec, prompt_row), prompt_row["text"]
        if settings.strategy == "logic-of-thought":
            from .logic import augment

            def one(ex: dict) -> tuple[str, str | None]:  # the rules' derived statements appended to the input
                return predict(model, layout, spec, prompt, augment(ex["input"])[0], settings)
        else:

            def one(ex: dict) -> tuple[str, str | None]:
                return predict(model, layout, spec, prompt, ex["input"], settings, calibration)

        guarded = skipping(one)
        return lambda batch: [guarded(ex) for ex in batch]


class TorchRuntime:
    """A :class:`~toolkit.engine.torch_backend.TorchModel`: examples in batches of ``batch_size``, with the
    engine's predictor (the same layout and answer rules as llama.cpp and the optimizer)."""

    backend = "torch"

    def __init__(self, tm, batch_size: int = 16):
        self.model = tm
        self.batch_size = batch_size
        self.device = next(tm.model.parameters()).device

    def identity(self) -> dict:
        tm = self.model
        return {"model_id": tm.info.id, "model_sha256": tm.sha256, "quantization": tm.precision}

    def row_settings(self) -> dict:
        return {"device": str(self.device)}

    def model_key(self) -> str:
        # CPU and GPU arithmetic differ; another chat template than the weights' own gives other answers
        return f"{self.model.sha256}:torch:{self.model.precision}:{self.device.type}" + template_key(self.model)

    def answers(
        self, spec: AnswerSpec, prompt_row: dict, settings: EvalSettings, calibration: Calibration | None
    ) -> Answers:
        from .engine.config import GreaterConfig, Item
        from .engine.parts import build_predictor
        from .layout import demos_from_json

        config = GreaterConfig(
            mode=settings.mode, max_new_tokens=settings.max_new_tokens, steps=1, batch_size=self.batch_size
        )
        predictor = build_predictor(self.model, spec, config, demos=demos_from_json(prompt_row.get("demos")))
        prompt_ids = predictor.text.encode(prompt_row["text"])

        def batch_answers(batch: list[dict]) -> list[tuple[str, str | None]]:
            items = [Item(ex["input"], ex["answer"]) for ex in batch]
            preds = predictor.predict_items(
                prompt_ids, items, answer_tokens=settings.answer_tokens, calibration=calibration
            )
            chains = predictor.decoder.chains(prompt_ids, items)  # cached by predict_items
            return [
                ((predictor.text.decode(chain).strip() + " " + str(pred)).strip(), pred)
                for chain, (_, pred) in zip(chains, preds)
            ]

        return batch_answers


def as_runtime(model, batch_size: int | None = None) -> Runtime:
    """``model`` as a runtime: a runtime as it is; a torch model as :class:`TorchRuntime`; anything else (a
    llama.cpp model, or a test's stand-in with its interface) as :class:`LlamaCppRuntime`."""
    if isinstance(model, Runtime):
        return model
    from .engine.torch_backend import TorchModel  # (no torch import: the model class only)

    if isinstance(model, TorchModel):
        return TorchRuntime(model) if batch_size is None else TorchRuntime(model, batch_size)
    return LlamaCppRuntime(model)


def load_model(
    kind: str,
    model: str | ModelInfo,
    *,
    precision: str = "auto",
    device: str = "auto",
    gpu_layers: int | None = None,
    n_threads: int | None = None,
    n_ctx: int | None = None,
):
    """Load ``model`` (an id or its manifest) for one runtime - the one place every face and the core load a
    model: ``kind`` "llamacpp" (the model's GGUF; ``gpu_layers`` offloaded, None: all where this llama.cpp build
    can, 0: none; ``n_threads``, ``n_ctx``: llama.cpp's defaults when None) or "torch" (at ``precision`` on
    ``device``, see :func:`toolkit.engine.torch_backend.load_torch_model`)."""
    info = get_model(model) if isinstance(model, str) else model
    if kind == "llamacpp":
        from .llamacpp import LlamaCppModel

        extra = {"n_ctx": n_ctx} if n_ctx is not None else {}
        return LlamaCppModel(info, n_threads=n_threads, n_gpu_layers=gpu_layers, **extra)
    if kind != "torch":
        raise ConfigError(f"Unknown runtime {kind!r}: use llamacpp or torch.")
    from .engine.torch_backend import load_torch_model

    return load_torch_model(info, precision=precision, device=device)


def skipping(answer: Callable[[dict], tuple[str, str | None]]) -> Callable[[dict], tuple[str, str | None]]:
    """``answer`` with an example too long for the model's context answered as skipped (counted wrong, its output
    says why): the rest of the evaluation goes on."""

    def guarded(ex: dict) -> tuple[str, str | None]:
        try:
            return answer(ex)
        except InputTooLongError as exc:
            return SKIPPED + str(exc), None

    return guarded


def evaluate_prompt(
    store,
    *,
    model,
    task_row: dict,
    prompt_row: dict,
    split: str = "test",
    settings: EvalSettings | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
    predictor: Callable[[dict], tuple[str, str | None]] | None = None,
    key_extra: Callable[[dict], str] | None = None,
    cluster: str | None = None,
    shard_size: int = 0,
) -> EvalReport:
    """Score one stored prompt version on a task split with ``model``: a loaded llama.cpp or torch model, or any
    :class:`Runtime` (see :func:`as_runtime`).

    Per-example results are cached by (prompt, model, settings, example): a repeated or interrupted evaluation
    only runs the examples it has not seen. A strategy (:mod:`toolkit.strategies`) passes its own ``predictor``
    (example -> (output, predicted)) and, when its answers depend on more than the example (the candidates it
    combines), ``key_extra`` (example -> text added to the cache key).

    ``cluster``: a Ray address; the examples not in the cache are split into shards of ``shard_size`` (0: about
    four per worker CPU) scored by Ray tasks on the workers' own copy of the model file, and stored here as each
    shard finishes (toolkit.cluster).
    """
    runtime = as_runtime(model)
    settings = settings or EvalSettings()
    if cluster is not None and (predictor is not None or settings.strategy != "plain"):
        raise ConfigError(
            "--ray shards plain evaluations; the strategies around a prompt (--second-attempt, --logic-of-thought, "
            "combine) run on this machine. Leave out --ray for them."
        )
    if runtime.backend != "llamacpp" and (predictor is not None or settings.strategy != "plain" or cluster):
        raise ConfigError(
            "The strategies around a prompt (--second-attempt, --logic-of-thought, combine) and --ray run on the "
            "llama.cpp backend: leave out --backend torch."
        )
    spec = store.task_spec(task_row)
    calibration = prompt_calibration(prompt_row, spec)
    if (calibration is not None or prompt_row.get("demos")) and (predictor is not None or settings.strategy != "plain"):
        raise ConfigError(
            f"Prompt {prompt_row['id']} has a label calibration or demonstrations; the strategies around a prompt "
            "do not apply those yet. Use the plain instruction (its parent) for a strategy."
        )
    examples = store.examples(task_row["id"], split, limit=limit)
    ev_id = store.create_evaluation(
        prompt_id=prompt_row["id"],
        task_id=task_row["id"],
        split=split,
        **runtime.identity(),
        backend=runtime.backend,
        mode=settings.label,
        n=len(examples),
        settings={
            **json.loads(settings.key()),
            "limit": limit,
            **runtime.row_settings(),
            **({"calibration": calibration.to_dict()} if calibration else {}),
        },
    )
    model_key = runtime.model_key()
    keyed = [
        (
            ex,
            cache_key(
                prompt_row["text"] + (key_extra(ex) if key_extra else ""),
                model_key,
                settings,
                spec,
                ex,
                calibration,
                prompt_row.get("demos"),
            ),
        )
        for ex in examples
    ]
    answers: Answers
    if predictor is not None:
        one = skipping(predictor)
        answers = lambda batch: [one(ex) for ex in batch]  # noqa: E731
    else:
        answers = runtime.answers(spec, prompt_row, settings, calibration)
    execute, batch_size = None, runtime.batch_size
    if cluster is not None:
        execute, batch_size = _sharded(cluster, runtime.model, spec, prompt_row, settings, shard_size, len(keyed), stop)
    return run_evaluation(
        store,
        ev_id,
        prompt_text=prompt_row["text"],
        spec=spec,
        keyed=keyed,
        predict_batch=answers,
        batch_size=max(1, batch_size),
        progress=progress,
        stop=stop,
        execute=execute,
    )


def _sharded(
    address: str, model, spec: AnswerSpec, prompt_row: dict, settings: EvalSettings, shard_size: int, n: int, stop
):
    """(``execute`` for :func:`run_evaluation`, the shard size): each shard a Ray task (:func:`_shard_on_worker`);
    a shard that fails is reported, the others are stored, and the evaluation then ends with an error that says
    how to finish it. Shard size 0: about four shards per CPU of the cluster (progress as they finish, little idle
    time at the end)."""
    from .cluster import connect, fan_out, mismatch, worker_identity

    ray = connect(address)
    prompt = {k: prompt_row.get(k) for k in ("id", "text", "demos", "calibration")}
    gpu_layers = getattr(model, "n_gpu_layers", 0)
    mine = worker_identity(model.info)

    def execute(parts: list[list[dict]], deliver: Callable[[int, list, float], None]) -> None:
        failed: list[str] = []

        def on_result(i: int, out: dict) -> None:
            why = mismatch(out, mine)
            if why is not None:
                failed.append(f"shard {i + 1}: {why}")
                return
            deliver(i, [tuple(o) for o in out["outputs"]], out["seconds"] / max(1, len(out["outputs"])))

        fan_out(
            ray,
            _shard_on_worker,
            (
                (i, (model.info.id, model.sha256, gpu_layers, spec, prompt, settings, part))
                for i, part in enumerate(parts)
            ),
            on_result=on_result,
            on_error=lambda i, message: failed.append(f"shard {i + 1}: {message}"),
            stop=stop,
        )
        if failed:
            raise ClusterWorkError(
                f"{len(failed)} of {len(parts)} shards failed ({'; '.join(failed[:3])}). The other shards' answers are "
                "stored: run the same command again to score only what is missing."
            )

    if shard_size <= 0:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        shard_size = max(1, -(-n // (4 * cpus)))
    return execute, shard_size


# A worker process keeps the llama.cpp models it loaded for the next shards (Ray reuses its workers).
_WORKER_LLAMA: dict[tuple[str, str, int], Any] = {}


def _shard_on_worker(
    model_id: str,
    sha256: str,
    gpu_layers: int,
    spec: AnswerSpec,
    prompt_row: dict,
    settings: EvalSettings,
    examples: list[dict],
) -> dict:
    """A Ray task: predict ``examples`` with the worker's own copy of the model file (found by its sha256)."""
    from .cluster import assigned_cpus, worker_identity
    from .llamacpp import LlamaCppModel
    from .models import locate_model

    key = (model_id, sha256, gpu_layers)
    if key not in _WORKER_LLAMA:
        _WORKER_LLAMA[key] = LlamaCppModel(
            locate_model(model_id, sha256), n_threads=assigned_cpus(), n_gpu_layers=gpu_layers
        )
    model = _WORKER_LLAMA[key]
    layout = prompt_layout(model, spec, prompt_row)
    calibration = prompt_calibration(prompt_row, spec)
    t0 = time.perf_counter()
    outputs = []
    for ex in examples:
        try:
            outputs.append(predict(model, layout, spec, prompt_row["text"], ex["input"], settings, calibration))
        except InputTooLongError as exc:
            outputs.append((SKIPPED + str(exc), None))
    return {
        "outputs": outputs,
        "seconds": time.perf_counter() - t0,
        **worker_identity(model.info),
    }
