"""The edge bundle, built from this checkout and run from a folder outside it, with a fresh user directory and
(where `unshare -n` is allowed) no network: version, models, import, eval (the same answers as the full
install), export, a clear refusal of the optimizer, and the TUI's first screen (in tmux)."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import assert_same_answers_as_llama, write_reviews_csv

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle():
    res = subprocess.run(
        ["bash", str(ROOT / "packaging" / "build_edge.sh")], capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    exe = ROOT / "dist" / "gradprompt-edge" / "gradprompt"
    assert exe.is_file()
    lib = exe.parent / "lib"
    for left_out in ("torch", "transformers", "bitsandbytes", "matplotlib"):
        assert not (lib / left_out).exists(), left_out
    return exe


def _no_network():
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return []
    return ["unshare", "-n"] if subprocess.run(["unshare", "-n", "true"]).returncode == 0 else []


def test_the_bundle_runs_outside_the_checkout(bundle, tmp_path, llama):
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "GRADPROMPT_HOME": str(tmp_path / "home"),
        "TERM": "xterm-256color",
        "COLUMNS": "200",
    }
    prefix = _no_network()

    def run(*args, cwd=work):
        return subprocess.run(
            [*prefix, str(bundle), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
        )

    assert "gradprompt, version" in run("--version").stdout
    assert "smollm2-135m" in run("models", "list").stdout
    assert run("init", "proj").returncode == 0
    proj = work / "proj"
    data = write_reviews_csv(work / "reviews.csv")
    assert run("tasks", "import", str(data), cwd=proj).returncode == 0
    prompt = "Is this review positive or negative?"
    assert run("prompts", "add", "reviews", prompt, cwd=proj).returncode == 0
    res = run("eval", "1", "--limit", "4", "--json", cwd=proj)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["n"] == 4
    # the same answers as the full install's llama.cpp on the same examples
    assert_same_answers_as_llama(proj, llama, prompt, "reviews", 4)
    res = run("export", "1", "--format", "llamacpp", "-o", "out/", cwd=proj)
    assert res.returncode == 0 and list((proj / "out").glob("*.json")), res.stderr
    res = run("optimize", "reviews", "--steps", "1", cwd=proj)
    assert res.returncode != 0 and "edge bundle leaves out" in res.stderr and "Traceback" not in res.stderr
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed: the TUI start is not checked")
    session = f"gp-bundle-{os.getpid()}"
    cmd = " ".join([*prefix, str(bundle), "tui"])
    subprocess.run(
        [
            "tmux",
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "100",
            "-y",
            "30",
            "-c",
            str(proj),
            f"env GRADPROMPT_HOME={tmp_path / 'home'} {cmd}",
        ],
        check=True,
    )
    try:
        screen = ""
        for _ in range(100):
            time.sleep(0.2)
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            if "reviews" in screen:
                break
        assert "gradprompt" in screen and "Tasks" in screen and "reviews" in screen, screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
