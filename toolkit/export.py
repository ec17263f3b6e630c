"""Export a stored prompt to a file a user can take elsewhere."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .errors import ConfigError

FORMATS = {"text": ".txt", "json": ".json"}


def prompt_bundle(project, prompt_id: int) -> dict:
    """Everything known about a prompt: text, task answer format, lineage, evaluations."""
    store = project.store
    row = store.prompt(prompt_id)
    task_row = store.db["tasks"].get(row["task_id"]) if row["task_id"] is not None else None
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
        "run": {"id": run["id"], "model_id": run["model_id"], "model_sha256": run["model_sha256"], "seed": run["seed"],
                "config": run["config"]} if run else None,
        "evaluations": [
            {k: e[k] for k in ("split", "model_id", "model_sha256", "backend", "quantization", "mode", "n", "accuracy",
                               "ci_low", "ci_high")}
            for e in store.evaluations(prompt_id=prompt_id) if e["status"] == "done"
        ],
    }


def export_prompt(project, prompt_id: int, fmt: str = "text", output: str | Path | None = None) -> Path:
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format {fmt!r}: use {', '.join(FORMATS)}.")
    bundle = prompt_bundle(project, prompt_id)
    if output is None:
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", bundle["task"] or "prompt")
        output = project.exports_dir / f"{slug}-prompt-{prompt_id}{FORMATS[fmt]}"
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "text":
        text = bundle["prompt"] + "\n"
        if bundle["answer"]:
            text += f"\n# Put the prompt after the input (blank line between). Then ask for the answer with:\n# {bundle['answer']['extractor']}\n"
    else:
        text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    tmp = output.with_name(output.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, output)
    return output
