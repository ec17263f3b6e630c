import json
from pathlib import Path

import yaml

from toolkit.demo import ensure_demo_task
from toolkit.export import export_prompt

PROMPT = "Decide whether the review is positive or negative."


def test_the_llamacpp_bundle_names_its_servers_and_fills_in_safely(project, llama):
    """The bundle's requests (run against a real server in tests/test_export_tools.py): the whole text up to the
    extractor with {input}, the label biases and grammar, and a llama-completion line that reads the filled-in
    text from a file (an apostrophe in the input cannot break shell quoting)."""
    task = ensure_demo_task(project)
    pid = project.add_prompt(task, PROMPT, origin="manual")
    bundle = json.loads(export_prompt(project, pid, "llamacpp").read_text())
    assert bundle["model"]["sha256"] == llama.sha256 and bundle["prompt_template"].count("{input}") == 1
    assert bundle["prompt_template"].endswith(PROMPT + "<|im_end|>\n<|im_start|>assistant\n" + task["extractor"])
    req = bundle["llama_cpp_python_server"]["request"]
    firsts = {str(ids[0]) for ids in bundle["label_tokens"].values()}
    assert set(req["logit_bias"]) == firsts and req["temperature"] == 0 and req["repeat_penalty"] == 1.0
    assert bundle["llama_server"]["request"]["logit_bias"] == [[int(t), 100.0] for t in req["logit_bias"]]
    cli = bundle["llama_completion"]
    assert cli.startswith("llama-completion ") and cli.endswith("-f PROMPT_FILE") and "{input}" not in cli
    assert "-no-cnv" in cli  # the GGUF has a chat template: llama-completion would start a conversation


def test_text_json_llm_and_promptfoo_exports(project):
    task = ensure_demo_task(project)
    pid = project.add_prompt(task, PROMPT, origin="manual")
    assert export_prompt(project, pid, "text").read_text().startswith(PROMPT + "\n")
    data = json.loads(export_prompt(project, pid, "json").read_text())
    assert data["prompt"] == PROMPT and data["answer"]["labels"] == ["negative", "positive"]
    llm = yaml.safe_load(export_prompt(project, pid, "llm").read_text())
    assert llm["prompt"].startswith("$input\n\n" + PROMPT) and llm["model"] == "SmolLM2"
    pf = yaml.safe_load(export_prompt(project, pid, "promptfoo").read_text())
    assert pf["prompts"][0].count("{{input}}") == 1 and pf["prompts"][0].endswith(task["extractor"])
    provider = pf["providers"][0]
    assert provider["id"] == "http" and provider["config"]["url"] == "http://127.0.0.1:8080/v1/completions"
    assert provider["config"]["body"]["prompt"] == "{{prompt}}" and "grammar" in provider["config"]["body"]
    tests = pf["tests"]
    assert len(tests) == len(project.store.examples(task["id"], "test"))  # nothing evaluated yet: the split
    assert all(t["vars"]["input"] and t["assert"][0]["type"] == "javascript" for t in tests)
    assert len(yaml.safe_load(export_prompt(project, pid, "promptfoo", limit=7).read_text())["tests"]) == 7


def test_promptfoo_keeps_braces_in_a_prompt_literal(project):
    """promptfoo renders prompts with Nunjucks: "{{" in a prompt must reach the model as written."""
    task = ensure_demo_task(project)
    prompt = "Say {{ label }} or {% raw %} - {# no #}."
    pid = project.add_prompt(task, prompt, origin="manual")
    template = yaml.safe_load(export_prompt(project, pid, "promptfoo").read_text())["prompts"][0]
    code = (
        "const nunjucks = require(process.argv[1]); const env = new nunjucks.Environment(null, {autoescape: false});"
        "process.stdout.write(env.renderString(process.argv[2], {input: 'An input.'}));"
    )
    from tests.test_export_tools import _promptfoo

    pf = _promptfoo()
    if pf is None:
        import pytest

        pytest.skip("promptfoo (and its nunjucks) is not installed")
    nunjucks = next(p / "nunjucks" for p in Path(pf).resolve().parents if (p / "nunjucks").is_dir())
    import subprocess

    out = subprocess.run(
        ["node", "-e", code, str(nunjucks), template], capture_output=True, text=True, check=True
    ).stdout
    assert "An input.\n\n" + prompt + "<|im_end|>" in out


def _run_js_assertion(js: str, output: str) -> bool:
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        import pytest

        pytest.skip("node is not installed: the promptfoo assertions' JavaScript is checked with it")
    # as promptfoo runs a one-line assertion: an expression
    code = f"const output = {json.dumps(output)}; process.stdout.write(String({js}));"
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
    assert _run_js_assertion(js, f" {ex['answer']}")  # the output is the label the grammar allowed
    assert _run_js_assertion(js, f" {ex['answer'].upper()}.")
    assert not _run_js_assertion(js, f" {other}")
    assert not _run_js_assertion(js, f"{other}, not {ex['answer']}")


def test_an_llm_template_keeps_dollar_signs_literal(project):
    """llm fills templates with string.Template: "$5" or "$x" in a prompt must reach the model as written."""
    from string import Template

    task = ensure_demo_task(project)
    prompt = "Price $5? Say $x or $$ - then answer."
    pid = project.add_prompt(task, prompt, origin="manual")
    llm = yaml.safe_load(export_prompt(project, pid, "llm").read_text())
    filled = Template(llm["prompt"]).substitute(input="A fine film.")
    assert filled.startswith("A fine film.\n\n" + prompt)
