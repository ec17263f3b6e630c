"""Baseline prompt optimizers driven by the same local model through llama.cpp (no API).

* ``initial``: the starting prompt as given.
* ``cot``: zero-shot chain of thought, "Let's think step by step."
* ``ape``: the model proposes instructions from a few training demonstrations; each is scored on the
  training split and the best are kept (Zhou et al., forward mode with selection).
* ``opro``: the model is the optimizer: a meta-prompt with the task, a few exemplars and the best
  (instruction, score) pairs so far; each step it proposes new instructions, which are scored (Yang et al.).
* ``kshot``: the start with ``n_shots`` random training rows as demonstrations (earlier chat turns), no search.
* ``kshot-dev``: random demonstration sets (1 to ``n_shots`` rows each), each scored on the dev rows; the best
  on dev is taken as it is, with no test against the start (DSPy's BootstrapFewShotWithRandomSearch with
  labelled demonstrations: the start itself, zero-shot, is the first candidate).

The demonstrations come from the training rows beyond the ``n_train`` scoring rows, the pool the whole-prompt
search draws from (so a demonstration is never scored on itself).

Runs and steps are stored like GReaTer's; the final prompt is the best of the top few on the dev split.
Generation is sampled (temperature, top-p and a per-call seed are recorded); scoring is greedy.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from . import defaults
from .defaults import DEFAULT_INITIAL_PROMPT
from .errors import ConfigError
from .evaluate import EvalSettings, predict
from .layout import ChatLayout
from .lifecycle import Finished, OptimizeResult, drive, library_versions
from .selection import DEFAULT_DEV_SIZE

METHODS = ("initial", "cot", "ape", "opro", "kshot", "kshot-dev")
DEMO_METHODS = ("kshot", "kshot-dev")
# what `gradprompt optimize --method` and the TUI's new-run form offer: the gradient search first, then these
RUN_METHODS = ("greater", "ape", "opro", "cot", "initial", "kshot", "kshot-dev")
COT_PROMPT = "Let's think step by step."

APE_META = (
    "I gave a friend an instruction and some inputs. The friend read the instruction and wrote an output "
    "for every one of the inputs. Here are the input-output pairs:\n\n{demos}\n\n"
    "What was the instruction? Reply with the instruction only, in one sentence."
)
OPRO_META = (
    "Your task is to write an instruction for a language model that answers questions like the examples "
    "below. Here are earlier instructions with their accuracy on training data (higher is better):\n\n"
    "{history}\n\nExamples of the task:\n\n{demos}\n\nWrite a new instruction that is different from the "
    "earlier ones and has an accuracy as high as possible. Reply with the instruction only, in one sentence."
)


@dataclass(frozen=True)
class BaselineConfig:
    method: str = "ape"
    budget_s: float = defaults.BUDGET_S  # wall-clock seconds for the whole search: proposing, scoring and the dev test
    max_steps: int = 20
    n_train: int = 16
    n_dev: int = DEFAULT_DEV_SIZE
    n_demos: int = 5
    candidates_per_step: int = 4
    history: int = 8  # OPRO: best pairs shown in the meta-prompt
    temperature: float = 0.9
    top_p: float = 0.95
    max_prompt_tokens: int = 60
    top_keep: int = 4  # best-by-train prompts compared on dev at the end
    n_shots: int = 4  # kshot / kshot-dev: demonstrations per set at most (the whole-prompt search's demo_max)
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"Unknown method {self.method!r}: use one of {', '.join(METHODS)} or greater.")
        for name, low in (("max_steps", 0), ("n_train", 1), ("n_dev", 0), ("n_shots", 1), ("top_keep", 1)):
            if int(getattr(self, name)) < low:
                raise ConfigError(f"{name} is {getattr(self, name)}: it must be at least {low}.")
        if not (self.budget_s > 0 and self.budget_s != float("inf")):
            raise ConfigError(f"The budget is {self.budget_s}: give a positive number of seconds.")

    @classmethod
    def for_run(cls, method: str, *, budget_s: float | None, **settings) -> BaselineConfig:
        """The settings of a run started from a face (the CLI, the TUI): the product's budget where none is given."""
        return cls(method=method, budget_s=budget_s or defaults.BUDGET_S, **settings)

    @classmethod
    def from_dict(cls, data: dict) -> BaselineConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class BaselineOptimizer:
    def __init__(self, model, spec, train: list[dict], dev: list[dict], config: BaselineConfig):
        self.model, self.spec, self.config = model, spec, config
        self.train, self.dev = train[: config.n_train], dev[: config.n_dev]
        self.pool = train[config.n_train :]  # the demonstrations' pool (never scored)
        self.layout = ChatLayout(model.chat_template, model.bos_token, model.eos_token)
        self._scores: dict[str, float] = {}

    def correct(self, prompt: str, items: list[dict], demos: tuple = ()) -> list[bool]:
        layout = self.layout.with_demos(demos, self.spec.extractor) if demos else self.layout
        return [
            bool(
                self.spec.is_correct(
                    predict(self.model, layout, self.spec, prompt, ex["input"], EvalSettings())[1], ex["answer"]
                )
            )
            for ex in items
        ]

    def demo_set(self, rng: random.Random, size: int | None = None) -> tuple:
        """``size`` (default ``n_shots``) random rows of the demonstrations' pool, as ((input, answer), ...)."""
        k = min(size or self.config.n_shots, len(self.pool))
        return tuple((ex["input"], ex["answer"]) for ex in rng.sample(self.pool, k))

    def accuracy(self, prompt: str, items: list[dict], demos: tuple = ()) -> float:
        return sum(self.correct(prompt, items, demos)) / max(1, len(items))

    def train_accuracy(self, prompt: str) -> float:
        if prompt not in self._scores:
            self._scores[prompt] = self.accuracy(prompt, self.train)
        return self._scores[prompt]

    def _demos(self, rng: random.Random) -> str:
        picks = rng.sample(self.train, min(self.config.n_demos, len(self.train)))
        return "\n\n".join(f"Input: {ex['input'][:400]}\nOutput: {ex['answer']}" for ex in picks)

    def _generate(self, user_text: str, seed: int) -> str:
        tokens = self.model.encode(self.layout.user_turn(user_text))
        out = self.model.llm.create_completion(
            prompt=tokens,
            max_tokens=self.config.max_prompt_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            seed=seed,
            stop=["\n", "<|im_end|>", "<end_of_turn>"],
        )
        self.model.stats["calls"] += 1
        self.model.stats["generated_tokens"] += out["usage"]["completion_tokens"]
        self.model.stats["evaluated_tokens"] += out["usage"]["prompt_tokens"]
        return clean_instruction(out["choices"][0]["text"])

    def propose(self, state: dict, rng: random.Random) -> list[str]:
        cfg = self.config
        out = []
        for _ in range(cfg.candidates_per_step):
            seed = rng.randrange(2**31)
            if cfg.method == "ape":
                meta = APE_META.format(demos=self._demos(rng))
            else:
                best = sorted(state["pool"], key=lambda t: t[0])[-cfg.history :]
                history = "\n\n".join(f"text: {text}\nscore: {round(100 * acc)}" for acc, text in best)
                meta = OPRO_META.format(history=history, demos=self._demos(rng))
            text = self._generate(meta, seed)
            if text and text not in out:
                out.append(text)
        return out

    def initial_state(self, initial_prompt: str) -> dict:
        return {"step": 0, "pool": [], "initial": initial_prompt, "elapsed": 0.0}

    def run(self, state: dict, stop: threading.Event | None = None):
        """Yield one record per step until the budget or ``max_steps`` is used; records carry ``state``."""
        cfg = self.config
        state = {**state, "pool": [list(t) for t in state["pool"]]}
        start_prompt = COT_PROMPT if cfg.method == "cot" else state["initial"]
        if not state["pool"]:
            t0 = time.perf_counter()
            state["pool"].append([self.train_accuracy(start_prompt), start_prompt])
            state["example_s"] = (time.perf_counter() - t0) / max(1, len(self.train))
        if cfg.method in ("initial", "cot", "kshot"):
            return
        if cfg.method == "kshot-dev":
            yield from self._demo_search(state, stop)
            return
        t0 = time.perf_counter() - state["elapsed"]
        budget = self._search_budget(state)
        while state["step"] < cfg.max_steps and time.perf_counter() - t0 < budget:
            if stop is not None and stop.is_set():
                return
            rng = random.Random(f"{cfg.seed}-{cfg.method}-{state['step']}")
            before = max(state["pool"], key=lambda t: t[0])
            t_step = time.perf_counter()
            cands = self.propose(state, rng)
            t_prop = time.perf_counter() - t_step
            scored: list = []
            for text in cands:  # a started step scores at least one of its proposals (else it proposed in vain)
                if scored and time.perf_counter() - t0 >= budget:
                    break
                t_one, fresh = time.perf_counter(), text not in self._scores
                scored.append({"text": text, "accuracy": self.train_accuracy(text)})
                if fresh:  # the slowest prompt so far sets the price of a dev pass (longer prompts cost more)
                    per = (time.perf_counter() - t_one) / max(1, len(self.train))
                    state["example_s"] = max(state.get("example_s", 0.0), per)
            budget = self._search_budget(state)
            known = {t[1] for t in state["pool"]}
            state["pool"] += [[c["accuracy"], c["text"]] for c in scored if c["text"] not in known]
            best = max(state["pool"], key=lambda t: t[0])
            state["step"] += 1
            state["elapsed"] = time.perf_counter() - t0
            yield {
                "step": state["step"] - 1,
                "position": 0,
                "prompt_before": before[1],
                "prompt_after": best[1],
                "prompt_ids": [],
                "chosen_token": "",
                "accepted": best[1] != before[1],
                "candidates": scored,
                "train_score": 1 - best[0],
                "train_accuracy": best[0],
                "timings": {"proposal": t_prop, "scoring": time.perf_counter() - t_step - t_prop},
                "state": dict(state),
                "events": [],
            }

    def _search_budget(self, state: dict) -> float:
        """Seconds the proposals may take: the budget less the final dev test, which compares the start and the
        best prompts by training score on the dev rows. It compares as many of them as fit in half the budget at
        the slowest per-example time seen (at least the best one, at most ``top_keep``; kept in ``state`` for
        :meth:`finish`), so that a short budget still leaves time to propose."""
        cfg = self.config
        dev_pass = state.get("example_s", 0.0) * len(self.dev)
        fit = int(0.5 * cfg.budget_s / dev_pass) - 1 if dev_pass > 0 else cfg.top_keep
        state["top_keep"] = max(1, min(cfg.top_keep, fit))
        return cfg.budget_s - dev_pass * (state["top_keep"] + 1)

    def _demo_search(self, state: dict, stop: threading.Event | None):
        """kshot-dev: random sets scored on dev until the budget is used; the start (zero-shot) first."""
        cfg = self.config
        state.setdefault("sets", [])
        t0 = time.perf_counter() - state["elapsed"]
        while state["step"] < cfg.max_steps and time.perf_counter() - t0 < cfg.budget_s:
            if stop is not None and stop.is_set():
                return
            rng = random.Random(f"{cfg.seed}-{cfg.method}-{state['step']}")
            demos = () if state["step"] == 0 or not self.pool else self.demo_set(rng, rng.randint(1, cfg.n_shots))
            t_step = time.perf_counter()
            before = max(state["sets"], key=lambda t: t[0]) if state["sets"] else None
            acc = self.accuracy(state["initial"], self.dev, demos)
            state["sets"] = state["sets"] + [[acc, [list(d) for d in demos]]]
            best = max(state["sets"], key=lambda t: t[0])  # the first of equals: fewer demonstrations first
            state["step"] += 1
            state["elapsed"] = time.perf_counter() - t0
            yield {
                "step": state["step"] - 1,
                "position": 0,
                "prompt_before": state["initial"],
                "prompt_after": state["initial"],
                "prompt_ids": [],
                "chosen_token": "",
                "accepted": before is not None and best is not before,
                "candidates": [{"text": state["initial"], "demos": len(demos), "dev_accuracy": acc}],
                "train_score": 1 - state["pool"][0][0],
                "train_accuracy": state["pool"][0][0],
                "timings": {"scoring": time.perf_counter() - t_step},
                "state": dict(state),
                "events": [f"{len(demos)} demonstrations: {100 * acc:.0f}% on {len(self.dev)} dev rows"],
            }

    def finish_demos(self, state: dict) -> tuple[tuple, float, float | None, list[dict]]:
        """kshot / kshot-dev: (demonstrations, train accuracy, dev accuracy, table) of the set taken."""
        initial = state["initial"]
        if self.config.method == "kshot":
            demos = self.demo_set(random.Random(f"{self.config.seed}-kshot"))
            dev = self.accuracy(initial, self.dev, demos) if self.dev else None
        else:
            sets = state.get("sets") or [[state["pool"][0][0], []]]
            dev, raw = max(sets, key=lambda t: t[0])
            demos = tuple((i, a) for i, a in raw)
        train = self.accuracy(initial, self.train, demos)
        table = [{"prompt": initial, "demos": list(demos), "train_accuracy": train, "dev_accuracy": dev}]
        return demos, train, dev, table

    def finish(self, state: dict) -> tuple[str, float, float | None, list[dict], dict | None]:
        """(prompt, train accuracy, dev accuracy, table, selection).

        ape / opro: the best of the top prompts by training accuracy replaces the starting prompt only if it is
        significantly better on the same dev examples (the paired test every optimizer uses:
        :func:`toolkit.selection.select_final`). initial / cot: their one prompt.
        """
        from .selection import annotate, select_final

        initial = state["initial"]
        if self.config.method in ("initial", "cot") or not self.dev:
            top = sorted(state["pool"], key=lambda t: -t[0])[: self.config.top_keep]
            table = [
                {
                    "prompt": text,
                    "train_accuracy": acc,
                    "dev_accuracy": self.accuracy(text, self.dev) if self.dev else None,
                }
                for acc, text in top
            ]
            best = max(table, key=lambda r: ((r["dev_accuracy"] or 0), r["train_accuracy"]))
            return best["prompt"], best["train_accuracy"], best["dev_accuracy"], table, None
        keep = state.get("top_keep", self.config.top_keep)  # what fitted in the budget (see _search_budget)
        top = sorted((t for t in state["pool"] if t[1] != initial), key=lambda t: -t[0])[:keep]
        init_ok = self.correct(initial, self.dev)
        vectors = [self.correct(text, self.dev) for _, text in top]
        sel = select_final(init_ok, vectors, train_scores=[-acc for acc, _ in top])
        table = [
            {"prompt": text, "train_accuracy": acc, "dev_accuracy": sum(v) / len(v)}
            for (acc, text), v in zip(top, vectors)
        ]
        table.append(
            {
                "prompt": initial,
                "train_accuracy": self.train_accuracy(initial),
                "dev_accuracy": sel.initial_accuracy,
                "initial": True,
            }
        )
        annotate(table, sel)
        if sel.chosen is not None:
            acc, text = top[sel.chosen]
            return text, acc, sel.best_accuracy, table, sel.to_dict()
        return initial, self.train_accuracy(initial), sel.initial_accuracy, table, sel.to_dict()


def clean_instruction(text: str) -> str:
    text = text.strip().strip('"').strip()
    import re

    # "The instruction was: ...", "The instruction is to ...", "Instruction: ...", "text: ..."
    text = (
        re.sub(r"^(?:the\s+)?(?:instruction|text)(?:\s+(?:was|is))?(?:\s+to\b)?\s*:?\s*", "", text, flags=re.IGNORECASE)
        .strip()
        .strip('"')
        .strip()
    )
    return text[:1].upper() + text[1:400] if text else text


def optimize_baseline(
    project,
    task: str | int,
    *,
    model,
    config: BaselineConfig,
    initial_prompt: str = DEFAULT_INITIAL_PROMPT,
    on_step: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    bench_id: int | None = None,
    run_id: int | None = None,
    force: bool = False,
    method_name: str | None = None,
) -> OptimizeResult:
    """Run (or, with ``run_id``, resume) a baseline on a stored task with a loaded llama.cpp model.
    ``method_name``: the bench's name for the run (``reference``: the hand-written prompt, run as ``initial``)."""
    store = project.store
    task_row = store.task(project.id, task)
    spec = store.task_spec(task_row)
    opt = BaselineOptimizer(
        model, spec, store.examples(task_row["id"], "train"), store.examples(task_row["id"], "dev"), config
    )
    if run_id is None:
        existing = store.find_prompt(project.id, task_row["id"], initial_prompt)
        initial_id = existing["id"] if existing else project.add_prompt(task_row, initial_prompt, origin="initial")
        run_config = {
            "method": config.method,
            "baseline": asdict(config),
            "initial_prompt": initial_prompt,
            "task": task_row["name"],
            "backend": "llamacpp",
            "bench_method": method_name or config.method,
            "sampling": {"temperature": config.temperature, "top_p": config.top_p, "seed": config.seed},
        }
        run_id = store.create_run(
            project_id=project.id,
            task_id=task_row["id"],
            method=config.method,
            model_id=model.info.id,
            model_sha256=model.sha256,
            config=run_config,
            seed=config.seed,
            versions=library_versions(),
            initial_prompt_id=initial_id,
            bench_id=bench_id,
        )
        state = opt.initial_state(initial_prompt)
    else:
        run = store.claim_run(run_id, force=force)  # refuses a finished run, or one a live process runs
        initial_id = run["initial_prompt_id"]
        steps = store.steps(run_id)
        state = steps[-1]["state"] if steps else opt.initial_state(run["config"]["initial_prompt"])
    return drive(project, task_row, run_id, BaselineRun(opt, model), state, initial_id, on_step, stop)


class BaselineRun:
    """A baseline optimizer seen through the one protocol :func:`toolkit.lifecycle.drive` runs."""

    def __init__(self, opt: BaselineOptimizer, model):
        self.opt, self.model = opt, model
        self.origin = opt.config.method  # ape, opro, cot or initial
        self.calls0 = dict(model.stats)

    def run(self, state: dict, stop=None):
        return self.opt.run(state, stop=stop)

    def current_prompt(self, state: dict) -> str:
        pool = state.get("pool") or []
        return max(pool, key=lambda t: t[0])[1] if pool else state["initial"]

    def conclude(self, state: dict):

        opt = self.opt
        if not state["pool"]:  # initial / cot never entered the loop body
            text = COT_PROMPT if opt.config.method == "cot" else state["initial"]
            state["pool"] = [[opt.train_accuracy(text), text]]
        demos: tuple = ()
        if opt.config.method in DEMO_METHODS:
            demos, train_acc, dev_acc, table = opt.finish_demos(state)
            prompt, selection = state["initial"], None
        else:
            prompt, train_acc, dev_acc, table, selection = opt.finish(state)
        usage = {k: self.model.stats[k] - self.calls0.get(k, 0) for k in self.model.stats}
        return Finished(
            prompt=prompt,
            train_accuracy=train_acc,
            dev_accuracy=dev_acc,
            steps=state["step"],
            top=table,
            selection=selection,
            usage=usage,
            demos=[list(d) for d in demos] or None,
        )
