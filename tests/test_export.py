import json

import yaml

from toolkit.demo import ensure_demo_task
from toolkit.evaluate import evaluate_prompt
from toolkit.export import export_prompt

PROMPT = "Decide whether the review is positive or negative."


def test_llamacpp_bundle_gives_the_same_answers_as_eval(project, llama):
    task = ensure_demo_task(project)
    pid = project.add_prompt(task, PROMPT, origin="manual")
    report = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=project.store.prompt(pid), limit=8)
    predicted = {r["example_id"]: r["predicted"] for r in project.store.results(report.evaluation_id)}
    bundle = json.loads(export_prompt(project, pid, "llamacpp").read_text())
    assert bundle["model"]["sha256"] == llama.sha256 and "{input}" in bundle["prompt_template"]
    assert "llama-cli" in bundle["llama_cli"] and "--logit-bias" in bundle["llama_cli"]
    req = bundle["llama_server"]["request"]
    for ex in project.store.examples(task["id"], "test", limit=8):
        text = req["prompt"].replace("{input}", ex["input"])
        tokens = llama.llm.tokenize(text.encode(), add_bos=False, special=True)
        out = llama.llm.create_completion(
            prompt=tokens,
            max_tokens=req["n_predict"],
            temperature=0,
            top_k=1,
            logit_bias={int(t): float(b) for t, b in req["logit_bias"]},
        )
        assert out["choices"][0]["text"].strip() == predicted[ex["id"]]


def test_text_json_llm_and_promptfoo_exports(project):
    task = ensure_demo_task(project)
    pid = project.add_prompt(task, PROMPT, origin="manual")
    assert export_prompt(project, pid, "text").read_text().startswith(PROMPT + "\n")
    data = json.loads(export_prompt(project, pid, "json").read_text())
    assert data["prompt"] == PROMPT and data["answer"]["labels"] == ["negative", "positive"]
    llm = yaml.safe_load(export_prompt(project, pid, "llm").read_text())
    assert llm["prompt"].startswith("$input\n\n" + PROMPT) and llm["model"] == "SmolLM2"
    pf = yaml.safe_load(export_prompt(project, pid, "promptfoo").read_text())
    assert pf["prompts"] == ["{{input}}\n\n" + PROMPT]
    assert pf["providers"][0]["config"]["apiBaseUrl"].startswith("http://127.0.0.1")
    tests = pf["tests"]
    assert len(tests) == len(project.store.examples(task["id"], "test"))
    assert all(t["vars"]["input"] and t["assert"][0]["type"] == "javascript" for t in tests)


def _run_js_assertion(js: str, output: str) -> bool:
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        import pytest

        pytest.skip("node is not installed: the promptfoo assertions' JavaScript is checked with it")
    code = f"const output = {json.dumps(output)}; const f = () => {{ {js} }}; process.stdout.write(String(f()));"
    return subprocess.run([node, "-e", code], capture_output=True, text=True, check=True).stdout == "true"


def test_promptfoo_assertions_judge_answers_like_gradprompt(project, tmp_path):
    from toolkit.tasks import ImportOptions, read_task_file

    path = tmp_path / "sums.jsonl"
    path.write_text(
        "".join(json.dumps({"input": f"{a} + {a}?", "target": str(2 * a * 500)}) + "\n" for a in range(1, 5))
    )
    project.store.add_task(project.id, read_task_file(path, name="sums", options=ImportOptions(split=(0, 0, 1))))
    num_task = project.store.find_task(project.id, "sums")
    pid = project.add_prompt(num_task, "Add them.", origin="manual")
    tests = yaml.safe_load(export_prompt(project, pid, "promptfoo").read_text())["tests"]
    first = tests[0]["assert"][0]
    assert first["type"] == "javascript"  # gold 1000
    assert _run_js_assertion(first["value"], "So the answer is 1,000.")
    assert _run_js_assertion(first["value"], "500 + 500 = 1000")
    assert not _run_js_assertion(first["value"], "The answer is 10000.")
    assert not _run_js_assertion(first["value"], "no idea")

    task = ensure_demo_task(project)
    pid = project.add_prompt(task, PROMPT, origin="manual")
    tests = yaml.safe_load(export_prompt(project, pid, "promptfoo").read_text())["tests"]
    ex = project.store.examples(task["id"], "test")[0]
    js = tests[0]["assert"][0]["value"]
    other = "negative" if ex["answer"] == "positive" else "positive"
    assert _run_js_assertion(js, f"It is {other}... no, {ex['answer'].upper()}.")  # the last label counts
    assert not _run_js_assertion(js, f"Maybe {ex['answer']}, but {other}.")


def test_an_llm_template_keeps_dollar_signs_literal(project):
    """llm fills templates with string.Template: "$5" or "$x" in a prompt must reach the model as written."""
    from string import Template

    task = ensure_demo_task(project)
    prompt = "Price $5? Say $x or $$ - then answer."
    pid = project.add_prompt(task, prompt, origin="manual")
    llm = yaml.safe_load(export_prompt(project, pid, "llm").read_text())
    filled = Template(llm["prompt"]).substitute(input="A fine film.")
    assert filled.startswith("A fine film.\n\n" + prompt)
