"""The edge install: the core without torch, transformers, bitsandbytes, textual or matplotlib.

Each test runs the real CLI in a fresh process where those packages cannot be imported (``sys.modules[name] =
None`` makes every ``import name`` raise ImportError, as on a machine that never installed them), so the
everyday testing side must work and the optimizer must say what it needs instead of a traceback.
"""

import json
import subprocess
import sys

import pytest
from conftest import assert_same_answers_as_llama, write_reviews_csv

BLOCKED = ("torch", "transformers", "bitsandbytes", "accelerate", "safetensors", "textual", "matplotlib")
RUNNER = (
    "import sys\n"
    f"for name in {BLOCKED!r}:\n"
    "    sys.modules[name] = None\n"
    "from toolkit.cli import main\n"
    "sys.argv = ['gradprompt'] + sys.argv[1:]\n"
    "main()\n"
)


def edge(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture
def edge_project(tmp_path):
    folder = tmp_path / "edge"
    res = edge("init", str(folder))
    assert res.returncode == 0, res.stderr
    data = write_reviews_csv(tmp_path / "reviews.csv")
    assert edge("--project", str(folder), "tasks", "import", str(data)).returncode == 0
    return folder


def test_the_core_runs_without_torch_textual_or_matplotlib(edge_project, tmp_path, llama):
    """version, models, tasks, prompts, llama.cpp eval (the same answers as the full install), export."""
    p = ["--project", str(edge_project)]
    assert "gradprompt" in edge("--version").stdout
    res = edge(*p, "models", "list")
    assert res.returncode == 0 and "smollm2-135m" in res.stdout
    assert edge(*p, "prompts", "add", "reviews", "Is this review positive or negative?").returncode == 0
    res = edge(*p, "eval", "1", "--limit", "4", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["n"] == 4 and "Traceback" not in res.stderr
    # the same answers as the full install's llama.cpp on the same examples (the project's stored outputs)
    assert_same_answers_as_llama(edge_project, llama, "Is this review positive or negative?", "reviews", 4)
    out = tmp_path / "exports"
    res = edge(*p, "export", "1", "--format", "json", "-o", str(out) + "/")
    assert res.returncode == 0 and list(out.glob("*.json")), res.stderr


def test_the_optimizer_and_the_tui_say_they_need_the_full_install(edge_project):
    p = ["--project", str(edge_project)]
    for args in (["optimize", "reviews", "--steps", "1"], ["tui"], ["eval", "1", "--backend", "torch", "--limit", "1"]):
        if args[0] == "eval":
            edge(*p, "prompts", "add", "reviews", "Answer.")
        res = edge(*p, *args)
        assert res.returncode != 0, args
        assert "Traceback" not in res.stderr and "ImportError" not in res.stderr, res.stderr
        assert "this install does not have" in res.stderr and "pip install 'gradprompt[" in res.stderr, res.stderr
        assert "packaging/setup.sh" in res.stderr


def test_no_library_warning_reaches_the_user_during_a_run(tmp_path, real_tm):
    """A real optimization step in a fresh process with Python's warnings shown (PYTHONWARNINGS=default):
    transformers' deprecation notices and the like must not reach the terminal."""
    import os

    folder = tmp_path / "warn"
    # every warning category shown, except ResourceWarning, which Python itself hides from users (llama-cpp-python
    # keeps two module-level /dev/null files open until exit)
    env = {**os.environ, "PYTHONWARNINGS": "default,ignore::ResourceWarning"}
    cli = [sys.executable, "-c", "from toolkit.cli import main; import sys; sys.argv[0] = 'gradprompt'; main()"]
    assert subprocess.run([*cli, "init", str(folder)], env=env, capture_output=True).returncode == 0
    data = tmp_path / "yn.csv"
    data.write_text("goal,target\n" + "".join(f"Is {i} even?,{'yes' if i % 2 == 0 else 'no'}\n" for i in range(20)))
    assert (
        subprocess.run(
            [*cli, "--project", str(folder), "tasks", "import", str(data)], env=env, capture_output=True
        ).returncode
        == 0
    )
    res = subprocess.run(
        [
            *cli,
            "--project",
            str(folder),
            "optimize",
            "yn",
            "--steps",
            "1",
            "--train-size",
            "2",
            "--dev-size",
            "2",
            "--mode",
            "direct",
            "--initial-prompt",
            "Answer the question.",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for text in (res.stdout, res.stderr):
        assert "Warning" not in text and "warn(" not in text, text[-3000:]
