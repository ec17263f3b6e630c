"""The TUI's evaluation actions: evaluate a prompt with llama.cpp, compare it across runtimes, add a model.
A mixin of the App (its workers report through the App's one error handler)."""

from __future__ import annotations

from pathlib import Path

from textual import work

from toolkit.errors import ConfigError
from toolkit.layout import CHAIN_CAP

from .dialogs import InputDialog, whole
from .host import AppHost
from .render import escape_markup


class EvaluationActions(AppHost):
    """Actions of the App (a mixin: it uses the App's project, store, widgets and workers)."""

    def action_evaluate(self) -> None:
        """Score the selected prompt with llama.cpp (in a worker; the result lands in the Results tab)."""
        prompt_id = self.selected_prompt()
        if prompt_id is None:
            return
        prompt = self.project.store.prompt(int(prompt_id))
        task = next(
            (t["name"] for t in self.project.store.list_tasks(self.project.id) if t["id"] == prompt["task_id"]), ""
        )

        def done(values: dict | None) -> None:
            if values:
                self.evaluate(int(prompt_id), values)

        self.push_screen(
            InputDialog(
                f"Evaluate prompt {prompt_id} with llama.cpp",
                [
                    ("task", "Task", task),
                    ("model", "Model (GGUF)", self.project.default_model),
                    ("split", "Split", "test", ["test", "dev", "train"]),
                    ("mode", "Mode", "direct", ["direct", "reasoning"]),
                    ("max_new_tokens", "Reasoning chain cap", str(CHAIN_CAP)),
                    ("limit", "Only the first N (blank: all)", ""),
                    ("strategy", "Strategy", "plain", ["plain", "second-attempt", "logic-of-thought"]),
                ],
            ),
            done,
        )

    @staticmethod
    def _eval_form(values: dict) -> tuple[str, str, int, int | None]:
        """(split, mode, chain cap, limit) from an evaluation form, or a ConfigError saying what is wrong."""

        split, mode = values["split"].strip(), values["mode"].strip()
        if split not in ("train", "dev", "test"):
            raise ConfigError(f"Split {split!r}: use train, dev or test.")
        if mode not in ("direct", "reasoning"):
            raise ConfigError(f"Mode {mode!r}: use direct or reasoning.")
        limit = whole(values, "limit", "Only the first N", 0, 1)
        return split, mode, whole(values, "max_new_tokens", "Reasoning chain cap", CHAIN_CAP, 1), limit or None

    def _llama_model(self, model_id: str):
        """The llama.cpp model of the evaluation workers (group "eval", one at a time), loaded once per id (call
        from a worker thread)."""
        if model_id not in self._llama:
            self.call_from_thread(self.notify, f"Loading {model_id} for llama.cpp...")
            self._llama[model_id] = self.backends.load_llama_model(model_id)
        return self._llama[model_id]

    def _status(self, text: str) -> None:
        """Progress of a worker, in the title bar (callable from the worker's thread)."""
        text = text or f"project {self.project.name}"  # a finished job gives the header its project back
        try:
            self.call_from_thread(setattr, self, "sub_title", text)
        except RuntimeError:  # called on the app's own thread
            self.sub_title = text

    @work(thread=True, group="eval", exclusive=True)
    def evaluate(self, prompt_id: int, values: dict) -> None:
        from toolkit.evaluate import EvalSettings
        from toolkit.evaluation import evaluate_prompt

        store = self.project.store
        strategy = (values.get("strategy") or "plain").strip()
        try:
            split, mode, cap, limit = self._eval_form(values)
            task_row = store.task(self.project.id, values["task"].strip())
            model_id = values["model"].strip()
            model = self._llama_model(model_id)
            if strategy == "second-attempt":
                self._second_attempt(model, task_row, prompt_id, split, mode, cap, limit)
                return
            settings = EvalSettings(mode=mode, max_new_tokens=cap)
            if strategy == "logic-of-thought":
                from toolkit.logic import RULES_VERSION

                settings = EvalSettings(
                    mode=mode, max_new_tokens=cap, strategy="logic-of-thought", strategy_args=RULES_VERSION
                )
            elif strategy != "plain":
                raise ConfigError(f"Strategy {strategy!r}: use plain, second-attempt or logic-of-thought.")
            report = evaluate_prompt(
                store,
                model=model,
                task_row=task_row,
                prompt_row=store.prompt(prompt_id),
                split=split,
                limit=limit,
                settings=settings,
                progress=lambda done, total: self._status(f"evaluating prompt {prompt_id}: {done}/{total}"),
            )
        except BaseException as exc:
            self._status("")
            self.report(exc)
            return
        lo, hi = report.ci
        self._status("")
        self.call_from_thread(self.refresh_all)
        self.call_from_thread(
            self.notify,
            f"Prompt {prompt_id}: {100 * report.accuracy:.1f}% "
            f"({report.correct}/{report.n}, 95% CI {100 * lo:.1f}-{100 * hi:.1f}%), "
            f"evaluation {report.evaluation_id}; {report.cached} from the cache. "
            "Enter on it in the Results tab shows every example.",
            timeout=12,
        )

    def _second_attempt(self, model, task_row, prompt_id: int, split: str, mode: str, cap: int, limit) -> None:
        """The second-attempt strategy (in the evaluation worker): both attempts stored, the flips notified."""
        from toolkit.evaluate import EvalSettings
        from toolkit.strategies import second_attempt

        report = second_attempt(
            self.project,
            model=model,
            task_row=task_row,
            prompt_row=self.project.store.prompt(prompt_id),
            split=split,
            settings=EvalSettings(mode=mode, max_new_tokens=cap),
            limit=limit,
            progress=lambda done, total: self._status(f"second attempt on prompt {prompt_id}: {done}/{total}"),
        )
        f, s, fl = report.first, report.second, report.flips
        self._status("")
        self.call_from_thread(self.refresh_all)
        self.call_from_thread(
            self.notify,
            f"Prompt {prompt_id}, second attempt: first {100 * f.accuracy:.1f}%, second {100 * s.accuracy:.1f}% "
            f"on {fl['n']} examples; wrong->right {fl['wrong_to_right']}, right->wrong {fl['right_to_wrong']} "
            f"(McNemar p={fl['p_value']:.3f}); {report.calls_first + report.calls_second} model calls. "
            f"Evaluations {f.evaluation_id} and {s.evaluation_id} are in the Results tab.",
            timeout=15,
        )

    def action_combine(self) -> None:
        """Combine the answers of several evaluations (issue 16): the model reads them (LMCor's prompting form) or
        a reranker trained on the training split picks the label; the report opens when it is done."""
        current = self.selected("#evals-table") or ""

        def done(values: dict | None) -> None:
            if values:
                self.combine(values)

        self.push_screen(
            InputDialog(
                "Combine evaluations (same task, split and examples)",
                [
                    ("ids", "Evaluation ids (2 or more)", current),
                    ("form", "Combiner", "model reads them", ["model reads them", "trained reranker"]),
                    ("model", "Model (GGUF)", self.project.default_model),
                ],
            ),
            done,
        )

    @work(thread=True, group="eval", exclusive=True)
    def combine(self, values: dict) -> None:
        from .dialogs import TextDialog

        store = self.project.store
        try:
            try:
                ids = [int(x) for x in values["ids"].replace(",", " ").split()]
            except ValueError:
                raise ConfigError("Evaluation ids: whole numbers from the Results tab, e.g. 3 4 5.") from None
            model_id = values["model"].strip()
            model = self._llama_model(model_id)
            task = store.task_by_id(store.evaluation(ids[0])["task_id"])["name"] if ids else ""
            progress = lambda done, total: self._status(f"combining: {done}/{total}")  # noqa: E731
            if values["form"] == "trained reranker":
                from toolkit.combiner import trained_combine, trained_combine_markdown

                trained = trained_combine(
                    self.project,
                    model=model,
                    folder=self.project.path / "combiners",
                    evaluation_ids=ids,
                    progress=progress,
                )
                text = trained_combine_markdown(trained, task=task, model=model_id)
            else:
                from toolkit.strategies import combine, combine_markdown

                report = combine(self.project, model=model, evaluation_ids=ids, progress=progress)
                text = combine_markdown(report, task=task, model=model_id)
        except BaseException as exc:
            self._status("")
            self.report(exc)
            return
        self._status("")
        self.call_from_thread(self.refresh_all)
        self.call_from_thread(self.push_screen, TextDialog("Combined", escape_markup(text)))

    def action_compare(self) -> None:
        """Score prompts across runtimes and quantizations (the quantization-gap matrix) in a worker."""
        prompt_id = self.selected_prompt()
        if prompt_id is None:
            return
        chain = self.project.store.lineage(int(prompt_id))
        ids = [chain[-1]["id"], chain[0]["id"]] if len(chain) > 1 else [chain[0]["id"]]
        m = self.project.default_model
        runtimes = f"torch:{m}:fp32, llamacpp:{m}, torch:{m}:8bit, torch:{m}:4bit"

        def done(values: dict | None) -> None:
            if values:
                self.compare(values)

        self.push_screen(
            InputDialog(
                "Compare prompts across runtimes and quantizations",
                [
                    ("prompts", "Prompt ids", ", ".join(map(str, ids))),
                    ("runtimes", "Runtimes", runtimes),
                    ("split", "Split", "test", ["test", "dev", "train"]),
                    ("mode", "Mode", "direct", ["direct", "reasoning"]),
                    ("max_new_tokens", "Reasoning chain cap", str(CHAIN_CAP)),
                    ("limit", "Only the first N (blank: all)", ""),
                ],
            ),
            done,
        )

    @work(thread=True, group="eval", exclusive=True)
    def compare(self, values: dict) -> None:
        from toolkit.compare import compare_prompts
        from toolkit.evaluate import EvalSettings

        def load(kind: str, model_id: str, precision: str):
            if kind == "llamacpp":
                return self.backends.load_llama_model(model_id)
            return self.backends.load_torch_model(model_id, precision)

        try:
            split, mode, cap, limit = self._eval_form(values)
            try:
                prompt_ids = [int(x) for x in values["prompts"].replace(",", " ").split()]
            except ValueError:
                raise ConfigError("Prompt ids must be whole numbers.") from None
            runtimes = [r.strip() for r in values["runtimes"].split(",") if r.strip()]
            if not prompt_ids or not runtimes:
                raise ConfigError("Give at least one prompt id and one runtime.")
            res = compare_prompts(
                self.project,
                prompt_ids,
                runtimes,
                split=split,
                limit=limit,
                settings=EvalSettings(mode=mode, max_new_tokens=cap),
                load=load,
                progress=lambda text: self._status(f"compare: {text}"),
            )
        except BaseException as exc:
            self._status("")
            self.report(exc)
            return
        lost = [f"prompt {pid} on {rt}" for pid, rt in res.lost_improvements()]
        self._status("")
        self.call_from_thread(self.refresh_all)
        self.call_from_thread(self.show_results)
        n = len(res.cells)
        text = (
            (
                f"{n} cells scored. The gain over prompt {prompt_ids[0]} on {runtimes[0]} does not survive: "
                + "; ".join(lost)
            )
            if lost
            else f"{n} cells scored; see the heat map."
        )
        self.call_from_thread(self.notify, text, severity="warning" if lost else "information", timeout=15)

    def action_add_model(self, ref: str = "") -> None:
        from toolkit.discover import suggested_id

        def done(values: dict | None) -> None:
            if values:
                self.add_model(values)

        self.push_screen(
            InputDialog(
                "Add a model found on this machine, a local GGUF file or a Hugging Face folder",
                [
                    ("from", "Found (ollama:, lmstudio:, hf:)", ref),
                    ("id", "Model id", suggested_id(ref) if ref else ""),
                    ("gguf", "GGUF file", ""),
                    ("hf", "HF folder", ""),
                    ("name", "Name", ""),
                    ("licence", "Licence", ""),
                    ("template", "Chat template file", ""),
                ],
            ),
            done,
        )

    @work(thread=True, group="models")
    def add_model(self, values: dict) -> None:
        from toolkit.models import add_model, gguf_chat_template

        try:  # hashing a large GGUF takes a while: off the UI thread
            template = None
            if values.get("template", "").strip():
                try:
                    template = Path(values["template"].strip()).expanduser().read_text(encoding="utf-8")
                except OSError as exc:
                    raise ConfigError(f"Cannot read the chat template file: {exc}") from None
            gguf = values["gguf"].strip() or None
            origin = values.get("from", "").strip() or None
            model_id = values["id"].strip()
            if origin and not model_id:
                from toolkit.discover import suggested_id

                model_id = suggested_id(origin)
            info = add_model(
                model_id,
                origin=origin,
                gguf=gguf,
                hf=values["hf"].strip() or None,
                name=values["name"].strip() or None,
                licence=values["licence"].strip(),
                chat_template=template,
            )
            bare = gguf is not None and template is None and not gguf_chat_template(gguf)
        except BaseException as exc:
            self.report(exc)
            return
        self.call_from_thread(self.refresh_models, True)
        self.call_from_thread(self.notify, f"Added model {info.id} ({info.shown_source})")
        gguf = info.gguf_path_str or None
        if bare:
            self.call_from_thread(
                self.notify,
                "That GGUF carries no chat template: prompts are laid out as plain "
                "'User: ... Assistant:' text. Add it again with a chat template file if the model "
                "expects its own turn format.",
                severity="warning",
                timeout=15,
            )
