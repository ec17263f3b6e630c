"""The trained form of combining (LMCor, issue 16): a small reranker trained with torch on the task's training
split, saved as safetensors in the project, and loaded by evaluation.

The candidates are several prompts of one label task. For an input, each prompt gives the model's
log-probabilities of the labels (llama.cpp, the scores gradprompt's own label choice compares); the reranker is a
multinomial logistic model over those k x L numbers that outputs one label. Trained on the training split with
a label-balanced cross-entropy (as the search's objective: a combiner cannot win by leaning to the majority
label), it learns which prompt to trust for which label and how to undo a prompt's bias towards one label -
what a majority vote cannot. It costs k model calls per input (one per prompt, as a vote does) and no more.

Inference needs numpy only (the weights are read without torch or safetensors, so the edge install can
evaluate with a trained combiner); training needs the ``torch`` extra.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .evaluate import EvalReport, EvalSettings, label_scores
from .evaluation import evaluate_prompt
from .files import partial_path
from .layout import ChatLayout

FORMAT = "gradprompt-combiner/1"


@dataclass
class Reranker:
    weight: Any  # numpy [k * L, L]
    bias: Any  # numpy [L]
    meta: dict
    path: Path
    sha256: str

    def probabilities(self, features: Sequence[float]):
        import numpy as np

        z = np.asarray(features, dtype=np.float32) @ self.weight + self.bias
        z = np.exp(z - z.max())
        return z / z.sum()


def features(model, layout: ChatLayout, spec, prompts: Sequence[str], input_text: str) -> list[float]:
    """The k x L label log-probabilities of ``input_text`` under each prompt (k model calls)."""
    out: list[float] = []
    for prompt in prompts:
        out += label_scores(model, model.encode(layout.render(input_text, prompt) + spec.extractor), spec.labels)
    return out


def train_weights(x, y: Sequence[int], n_labels: int, *, seed: int = 0, steps: int = 400, weight_decay: float = 1e-3):
    """A multinomial logistic model on ``x`` [n, d] -> ``y``, label-balanced cross-entropy, full batch (torch).
    Returns (weight [d, L], bias [L]) as numpy float32."""
    try:
        import torch
    except ImportError:
        raise ConfigError("Training a combiner needs torch: pip install 'gradprompt[torch]'.") from None
    torch.manual_seed(seed)
    xs = torch.tensor(x, dtype=torch.float32)
    ys = torch.tensor(list(y), dtype=torch.long)
    counts = torch.bincount(ys, minlength=n_labels).float()
    class_weight = torch.where(counts > 0, counts.sum() / (n_labels * counts.clamp(min=1)), torch.zeros_like(counts))
    layer = torch.nn.Linear(xs.shape[1], n_labels)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05, weight_decay=weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weight)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(layer(xs), ys)
        loss.backward()
        opt.step()
    return layer.weight.detach().T.contiguous().numpy(), layer.bias.detach().numpy()


def save(path: Path, weight, bias, meta: dict) -> Path:
    """Write the reranker as safetensors (float32 ``weight`` and ``bias``, ``meta`` as JSON in the header's
    metadata), atomically."""
    import numpy as np

    tensors = {
        "bias": np.ascontiguousarray(bias, dtype=np.float32),
        "weight": np.ascontiguousarray(weight, dtype=np.float32),
    }
    header: dict = {"__metadata__": {"format": FORMAT, "meta": json.dumps(meta, sort_keys=True)}}
    offset = 0
    for name, array in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for array in tensors.values():
                f.write(array.tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: str | Path) -> Reranker:
    """Read a reranker written by :func:`save` (or any safetensors file with the same tensors and metadata)."""
    import numpy as np

    path = Path(path)
    try:
        data = path.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        meta = json.loads(header["__metadata__"]["meta"])
        if header["__metadata__"].get("format") != FORMAT:
            raise ValueError("not a gradprompt combiner")
        arrays = {}
        for name in ("weight", "bias"):
            start, end = header[name]["data_offsets"]
            raw = data[8 + n + start : 8 + n + end]
            arrays[name] = np.frombuffer(raw, dtype=np.float32).reshape(header[name]["shape"])
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise ConfigError(f"Cannot read the combiner {path}: {exc}. Train it again with --trained.") from None
    return Reranker(arrays["weight"], arrays["bias"], meta, path, hashlib.sha256(data).hexdigest())


@dataclass
class TrainedCombineReport:
    combined: EvalReport
    n: int
    candidates: list[dict]  # per source evaluation: id, prompt_id, accuracy on the shared examples
    vote_accuracy: float
    any_correct: float
    best_single: dict
    flips_vs_best: dict
    combiner: str  # the safetensors file
    trained: bool  # trained now (else loaded)
    train_n: int
    train_accuracy: float  # the reranker's, on its training examples
    train_calls: int
    train_seconds: float
    calls: int  # model calls of the evaluation now (k per example not cached)
    seconds: float

    def to_dict(self) -> dict:
        from .strategies import eval_fields

        return {**asdict(self), "combined": eval_fields(self.combined)}


def trained_combine(
    project,
    *,
    model,
    folder: Path,
    evaluation_ids: Sequence[int],
    train_size: int | None = None,
    retrain: bool = False,
    progress: Callable[[int, int], None] | None = None,
    stop=None,
) -> TrainedCombineReport:
    """Combine the prompts of several evaluations (one label task and split, direct mode) with a reranker trained
    on the task's training split; evaluated on the evaluations' examples like any evaluation (stored, cached)."""
    store = project.store
    from .effects import vote
    from .strategies import against_candidates, candidate_results

    evals, results, examples, n = candidate_results(store, evaluation_ids)
    task_row = store.task_by_id(evals[0]["task_id"])
    spec = store.task_spec(task_row)
    if spec.kind != "label":
        raise ConfigError(f"A trained combiner needs a label task; {task_row['name']} has {spec.kind} answers.")
    if any(e["mode"] != "direct" for e in evals):
        raise ConfigError("A trained combiner reads the labels' scores in direct mode: combine direct evaluations.")
    voted = vote(store, evaluation_ids)
    prompt_ids = [e["prompt_id"] for e in evals]
    prompts = [store.prompt(i)["text"] for i in prompt_ids]
    labels = list(spec.labels)
    layout = ChatLayout(model.chat_template, model.bos_token, model.eos_token)
    train = store.examples(task_row["id"], "train", limit=train_size)
    if len(train) < 2 * len(labels):
        raise ConfigError(
            f"The task {task_row['name']} has {len(train)} training examples: too few to train a combiner "
            "(import it with a train split)."
        )
    name = f"{task_row['name']}-prompts-{'-'.join(map(str, prompt_ids))}-n{len(train)}-{model.sha256[:8]}.safetensors"
    path = Path(folder) / name
    trained, train_calls, train_seconds = False, 0, 0.0
    if retrain or not path.exists():
        t0 = time.perf_counter()
        calls0 = model.stats["calls"]
        x, y = [], []
        for i, ex in enumerate(train):
            if stop is not None and stop.is_set():
                raise ConfigError("Stopped while training the combiner; nothing was saved.")
            x.append(features(model, layout, spec, prompts, ex["input"]))
            gold = ex["answer"].strip().lower()
            y.append(next((j for j, lab in enumerate(labels) if lab.strip().lower() == gold), -1))
            if progress:
                progress(i + 1, len(train) + n)
        keep = [i for i, label in enumerate(y) if label >= 0]
        weight, bias = train_weights([x[i] for i in keep], [y[i] for i in keep], len(labels))
        import numpy as np

        pred = (np.asarray([x[i] for i in keep], dtype=np.float32) @ weight + bias).argmax(axis=1)
        train_acc = float((pred == np.asarray([y[i] for i in keep])).mean())
        meta = {
            "task": task_row["name"],
            "labels": labels,
            "prompt_ids": prompt_ids,
            "prompts": prompts,
            "model_sha256": model.sha256,
            "features": "label log-probabilities per prompt (direct mode), prompt-major",
            "train_n": len(keep),
            "train_accuracy": train_acc,
        }
        save(path, weight, bias, meta)
        trained, train_calls, train_seconds = True, model.stats["calls"] - calls0, time.perf_counter() - t0
    reranker = load(path)
    if reranker.meta["prompts"] != prompts or reranker.meta["labels"] != labels:
        raise ConfigError(f"{path} was trained for other prompts or labels. Add --retrain.")
    settings = EvalSettings(
        mode="direct", strategy="trained-combine", strategy_args=json.dumps({"combiner": reranker.sha256})
    )

    def predictor(ex: dict) -> tuple[str, str | None]:
        probs = reranker.probabilities(features(model, layout, spec, prompts, ex["input"]))
        best = int(probs.argmax())
        shown = ", ".join(f"{lab} {p:.2f}" for lab, p in zip(labels, probs))
        return f"candidates: {' | '.join(str(r[ex['id']]['predicted']) for r in results)}\nreranker: {shown}", labels[
            best
        ]

    offset = len(train) if trained else 0
    t0, calls0 = time.perf_counter(), model.stats["calls"]
    combined = evaluate_prompt(
        store,
        model=model,
        task_row=task_row,
        prompt_row=store.prompt(prompt_ids[0]),
        split=evals[0]["split"],
        settings=settings,
        limit=n,
        progress=(lambda done, total: progress(offset + done, offset + total)) if progress else None,
        stop=stop,
        predictor=predictor,
        key_extra=lambda ex: json.dumps(prompt_ids),
    )
    return TrainedCombineReport(
        combined=combined,
        **against_candidates(store, combined.evaluation_id, evals, results, examples, n, voted),
        combiner=str(path),
        trained=trained,
        train_n=int(reranker.meta["train_n"]),
        train_accuracy=float(reranker.meta["train_accuracy"]),
        train_calls=train_calls,
        train_seconds=train_seconds,
        calls=model.stats["calls"] - calls0,
        seconds=time.perf_counter() - t0,
    )


def trained_combine_markdown(report: TrainedCombineReport, *, task: str, model: str) -> str:
    c, fl = report.combined, report.flips_vs_best
    k = len(report.candidates)
    rows = [
        f"| evaluation {x['id']} (prompt {x['prompt_id']}) alone | {100 * x['accuracy']:.1f}% | 1 |"
        for x in report.candidates
    ]
    how = (
        f"trained now on {report.train_n} training examples ({report.train_calls} model calls, "
        f"{report.train_seconds:.1f} s)"
        if report.trained
        else f"loaded (trained on {report.train_n} training examples)"
    )
    return "\n".join(
        [
            f"# Trained combine: {task}, {model}, {report.n} examples",
            "",
            f"Reranker `{report.combiner}`: {how}; its accuracy on those: {100 * report.train_accuracy:.1f}%.",
            "",
            "| | accuracy | model calls per input |",
            "|---|---|---|",
            *rows,
            f"| majority vote | {100 * report.vote_accuracy:.1f}% | {k} |",
            f"| any candidate right (ceiling) | {100 * report.any_correct:.1f}% | - |",
            f"| **trained reranker** | **{100 * c.accuracy:.1f}%** (95% CI {100 * c.ci[0]:.1f}-"
            f"{100 * c.ci[1]:.1f}) | {k} |",
            "",
            f"Against the best candidate alone (evaluation {report.best_single['id']}) on the same examples: "
            f"wrong -> right {fl['wrong_to_right']}, right -> wrong {fl['right_to_wrong']}, exact two-sided "
            f"McNemar p = {fl['p_value']:.3f}"
            + (" (significant)." if fl["p_value"] < 0.05 else ": no significant difference."),
            f"Calls now: {report.calls} ({report.seconds:.1f} s; cached examples cost none).",
            "",
        ]
    )
