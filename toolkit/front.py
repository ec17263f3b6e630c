"""Which model and quantization to deploy a prompt on: accuracy against size, and the front.

For each (model, quantization) GGUF the prompts are scored with llama.cpp on the same examples (stored as
evaluations like any other); the row of a variant holds what was measured, never what a name says: the file's
size on disk, the process's resident memory while the variant was loaded and scoring (peak minus what the
process held before loading it), the examples scored per second (model calls only; cached examples are not
timed), the accuracy with its 95% interval, and the paired test against the most precise variant of the same
model on the same examples. A variant is on the front when no other is both no larger and no less accurate with
one of the two strictly better (ties are kept: two variants of equal size and accuracy are both on it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .stats import mcnemar_two_sided, paired_counts_by_key

# Precision of a GGUF's quantization, most precise first (the reference of a model's paired tests).
PRECISION_ORDER = (
    "F32",
    "BF16",
    "F16",
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q5_1",
    "Q5_K_S",
    "Q5_0",
    "Q4_K_M",
    "Q4_1",
    "Q4_K_S",
    "Q4_0",
    "Q3_K_M",
    "Q2_K",
)


def precision_rank(quantization: str) -> int:
    q = (quantization or "").upper()
    return PRECISION_ORDER.index(q) if q in PRECISION_ORDER else len(PRECISION_ORDER)


@dataclass
class FrontRow:
    model_id: str
    family_model: str  # the model the variant was made from (its paired tests are against that model's best)
    quantization: str
    prompt_id: int
    evaluation_id: int
    size_bytes: int
    peak_rss_mb: float | None
    examples_per_s: float | None
    accuracy: float
    ci: tuple[float, float]
    n: int
    reference: str = ""  # the most precise variant of the same model
    fixed: int | None = None
    broken: int | None = None
    p_value: float | None = None
    on_front: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (size, accuracy) points: whether each is on the front (no other point is no larger and no less
    accurate with one of the two strictly better). Equal points are both kept."""
    out = []
    for i, (size, acc) in enumerate(points):
        dominated = any(s <= size and a >= acc and (s < size or a > acc) for j, (s, a) in enumerate(points) if j != i)
        out.append(not dominated)
    return out


def mark_front(rows: list[FrontRow]) -> list[FrontRow]:
    """Set ``on_front`` per prompt (each prompt has its own front)."""
    for pid in {r.prompt_id for r in rows}:
        mine = [r for r in rows if r.prompt_id == pid]
        for r, on in zip(mine, pareto_front([(r.size_bytes, r.accuracy) for r in mine])):
            r.on_front = on
    return rows


def base_model(info) -> str:
    """The model a variant was made from (`models quantize` records it), else the model itself."""
    return str((info.extra.get("derived_from") or {}).get("model") or info.id)


class _RssSampler:
    """The process's resident memory, sampled every 20 ms from /proc (Linux) while it runs; its peak."""

    def __init__(self):
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> float | None:
        try:
            with open("/proc/self/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def _run(self):
        while not self._stop.wait(0.02):
            value = self.now()
            if value is not None and (self.peak is None or value > self.peak):
                self.peak = value

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def measure_front(
    project,
    prompt_ids: list[int],
    model_ids: list[str],
    *,
    task=None,
    split: str = "test",
    limit: int | None = None,
    settings=None,
    progress: Callable[[str], None] | None = None,
    load: Callable[[str], object] | None = None,
) -> list[FrontRow]:
    """Score every prompt on every model's GGUF with llama.cpp, one model loaded at a time, and measure it."""
    from .compare import _free_memory
    from .evaluation import evaluate_prompt, load_model
    from .models import get_model

    store = project.store
    prompts = [store.prompt(pid) for pid in prompt_ids]
    task_row = store.task(project.id, task if task is not None else prompts[0]["task_id"])
    infos = [get_model(m) for m in model_ids]
    rows: list[FrontRow] = []
    for info in infos:
        path = info.gguf_path()
        assert path is not None
        if progress:
            progress(f"loading {info.id}")
        before = _RssSampler.now()
        with _RssSampler() as rss:
            model: object
            if load is None:
                model = load_model("llamacpp", info)
            else:
                model = load(info.id)
            for p in prompts:
                if progress:
                    progress(f"{info.id}: prompt {p['id']}")
                t0 = time.perf_counter()
                rep = evaluate_prompt(
                    store, model=model, task_row=task_row, prompt_row=p, split=split, settings=settings, limit=limit
                )
                seconds = time.perf_counter() - t0
                rows.append(
                    FrontRow(
                        model_id=info.id,
                        family_model=base_model(info),
                        quantization=(info.quantization or "gguf").upper(),
                        prompt_id=p["id"],
                        evaluation_id=int(rep.evaluation_id or 0),
                        size_bytes=Path(path).stat().st_size,
                        peak_rss_mb=None,
                        examples_per_s=(rep.model_calls / seconds) if rep.model_calls and seconds > 0 else None,
                        accuracy=rep.accuracy,
                        ci=rep.ci,
                        n=rep.n,
                    )
                )
            del model
            _free_memory()
        peak = None if (rss.peak is None or before is None) else max(0.0, rss.peak - before)
        for r in rows:
            if r.model_id == info.id:
                r.peak_rss_mb = peak
    paired_tests(store, rows)
    return mark_front(rows)


def paired_tests(store, rows: list[FrontRow]) -> None:
    """Each variant against the most precise variant of the same model, for the same prompt, same examples."""
    for r in rows:
        same = [o for o in rows if o.family_model == r.family_model and o.prompt_id == r.prompt_id]
        ref = min(same, key=lambda o: (precision_rank(o.quantization), -o.size_bytes))
        r.reference = ref.model_id
        if ref is r:
            continue
        a = {x["example_id"]: bool(x["correct"]) for x in store.results(r.evaluation_id)}
        b = {x["example_id"]: bool(x["correct"]) for x in store.results(ref.evaluation_id)}
        r.fixed, r.broken, _ = paired_counts_by_key(a, b)
        r.p_value = mcnemar_two_sided(r.fixed, r.broken)


def latest_report(project_path: str | Path) -> tuple[Path, list[dict]] | None:
    """The newest front report of a project (``reports/front-*.json``, what ``compare --front`` writes) and its
    rows, sorted as the Markdown table sorts them; None when there is none that reads (a damaged or foreign file is
    skipped, never raised)."""
    import json

    for path in sorted(Path(project_path, "reports").glob("front-*.json"), reverse=True):
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            keys = {"prompt_id", "model_id", "family_model", "quantization", "size_bytes", "accuracy", "ci", "n"}
            if isinstance(rows, list) and rows and all(isinstance(r, dict) and keys <= set(r) for r in rows):
                rows.sort(key=lambda r: (r["prompt_id"], r["family_model"], precision_rank(r["quantization"])))
                return path, rows
        except (OSError, ValueError):
            continue
    return None


def cells(r: dict) -> list[str]:
    """One front row as the table's cells: prompt, model, quant, file, peak RSS, examples/s, accuracy (95% CI),
    the paired test against the most precise variant, whether it is on the front."""
    if r.get("p_value") is None:
        test = "reference"
    else:
        test = f"+{r.get('fixed')}/-{r.get('broken')} p={r['p_value']:.2f}"
        if r["p_value"] < 0.05 and (r.get("broken") or 0) > (r.get("fixed") or 0):
            test += " (worse)"
    lo, hi = r["ci"]
    return [
        str(r["prompt_id"]),
        str(r["model_id"]),
        str(r["quantization"]),
        f"{r['size_bytes'] / 1e6:.0f} MB",
        f"{r['peak_rss_mb']:.0f} MB" if r.get("peak_rss_mb") is not None else "-",
        f"{r['examples_per_s']:.1f}" if r.get("examples_per_s") is not None else "cached",
        f"{100 * r['accuracy']:.0f}% ({100 * lo:.0f}-{100 * hi:.0f})",
        test,
        "yes" if r.get("on_front") else "",
    ]


FRONT_COLUMNS = (
    "prompt",
    "model",
    "quant",
    "file",
    "peak RSS",
    "examples/s",
    "accuracy (95% CI)",
    "vs most precise",
    "front",
)


def markdown(rows: list[FrontRow], title: str = "") -> str:
    lines = [title, ""] if title else []
    lines += ["| " + " | ".join(FRONT_COLUMNS) + " |", "|" + "---|" * len(FRONT_COLUMNS)]
    for r in sorted(rows, key=lambda r: (r.prompt_id, r.family_model, precision_rank(r.quantization))):
        row = cells(r.to_dict())
        row[7] = row[7].replace("(worse)", "**(worse)**")
        row[8] = "**yes**" if row[8] else ""
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_chart(rows: list[FrontRow], path: Path) -> Path | None:
    """Accuracy against file size, one marker per variant, the front drawn as a step line (PNG)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for pid in sorted({r.prompt_id for r in rows}):
        mine = sorted((r for r in rows if r.prompt_id == pid), key=lambda r: r.size_bytes)
        ax.scatter([r.size_bytes / 1e6 for r in mine], [100 * r.accuracy for r in mine], label=f"prompt {pid}")
        for r in mine:
            ax.annotate(f"{r.family_model} {r.quantization}", (r.size_bytes / 1e6, 100 * r.accuracy), fontsize=7)
        front = [r for r in mine if r.on_front]
        ax.step([r.size_bytes / 1e6 for r in front], [100 * r.accuracy for r in front], where="post", alpha=0.6)
    ax.set_xlabel("GGUF file size (MB)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy against size; the line is the front")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
