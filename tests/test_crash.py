"""Crash safety with real processes: `gradprompt optimize` killed with SIGKILL in the middle of a run leaves a run
that reads `interrupted`, whose history passes SQLite's integrity check, and that `runs resume` finishes with the
same steps and final prompt as a run that was never killed (the default model, fp32 torch on the CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit.project import init_project

ARGS = [
    "--steps",
    "3",
    "--train-size",
    "3",
    "--dev-size",
    "3",
    "--width",
    "4",
    "--probe",
    "1",
    "--precision",
    "fp32",
    "--device",
    "cpu",
    "--initial-prompt",
    "Answer the question.",
]


GRADPROMPT = str(Path(sys.executable).with_name("gradprompt"))


def _cli(project_dir, *args, timeout=600):
    env = {**os.environ, "GRADPROMPT_PROJECT": str(project_dir), "COLUMNS": "200"}
    return subprocess.run([GRADPROMPT, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _kill_when(proc, project_dir, condition, limit_s=300, log_path=None):
    """SIGKILL ``proc`` as soon as ``condition(store)`` holds in the project's history (polled)."""
    from toolkit.project import open_project

    deadline = time.time() + limit_s
    try:
        while time.time() < deadline:
            proj = open_project(project_dir)
            try:
                if condition(proj.store):
                    break
            finally:
                proj.close()
            if proc.poll() is not None:
                said = Path(log_path).read_text()[-3000:] if log_path else ""
                raise AssertionError(f"the process ended (rc {proc.returncode}) before the point to kill it:\n{said}")
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def demo_project(tmp_path, real_tm):  # real_tm: the torch weights are converted once for the session
    from toolkit.demo import ensure_demo_task

    proj = init_project(tmp_path / "proj", name="crash")
    task = ensure_demo_task(proj)
    proj.close()
    return tmp_path / "proj", task["name"]


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(demo_project, tmp_path):
    project_dir, task = demo_project
    env = {**os.environ, "GRADPROMPT_PROJECT": str(project_dir)}
    log = (tmp_path / "optimize.log").open("w")  # what the process said, should it end too early
    proc = subprocess.Popen([GRADPROMPT, "optimize", task, *ARGS], env=env, stdout=log, stderr=subprocess.STDOUT)
    from toolkit.project import open_project

    # Kill right after the first step is stored.
    _kill_when(proc, project_dir, lambda store: store.db["runs"].count and len(store.steps(1)) >= 1, log_path=log.name)
    proj = open_project(project_dir)
    assert proj.store.db.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert proj.store.run(1)["status"] == "interrupted"
    killed_steps = len(proj.store.steps(1))
    assert 1 <= killed_steps < 3
    proj.close()
    listed = _cli(project_dir, "runs", "list")
    assert "interrupted" in listed.stdout, listed.stdout + listed.stderr
    resumed = _cli(project_dir, "runs", "resume", "1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # The same run, never killed, in a second project with the same task.
    fresh = _cli(project_dir, "optimize", task, *ARGS)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    proj = open_project(project_dir)
    try:
        a = [(s["step"], s["prompt_after"], s["train_score"], s["candidates"]) for s in proj.store.steps(1)]
        b = [(s["step"], s["prompt_after"], s["train_score"], s["candidates"]) for s in proj.store.steps(2)]
        assert [x[0] for x in a] == [0, 1, 2] and a == b
        r1, r2 = proj.store.run(1), proj.store.run(2)
        assert r1["status"] == r2["status"] == "done"
        assert proj.store.prompt(r1["best_prompt_id"])["text"] == proj.store.prompt(r2["best_prompt_id"])["text"]
        assert proj.store.db.execute("pragma integrity_check").fetchone()[0] == "ok"
    finally:
        proj.close()


def test_a_live_run_cannot_be_resumed_twice(demo_project):
    project_dir, task = demo_project
    env = {**os.environ, "GRADPROMPT_PROJECT": str(project_dir)}
    proc = subprocess.Popen(
        [GRADPROMPT, "optimize", task, *ARGS[:-2], "--steps", "50"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    from toolkit.project import open_project

    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            proj = open_project(project_dir)
            started = proj.store.db["runs"].count > 0
            proj.close()
            if started:
                break
            time.sleep(0.2)
        second = _cli(project_dir, "runs", "resume", "1")
        assert second.returncode != 0
        assert f"running in process {proc.pid}" in second.stdout + second.stderr
        assert "Traceback" not in second.stdout + second.stderr
    finally:
        proc.kill()
        proc.wait()
    listed = _cli(project_dir, "runs", "list")
    assert "interrupted" in listed.stdout


def test_sigkill_during_model_load_leaves_nothing_running(demo_project):
    project_dir, task = demo_project
    env = {**os.environ, "GRADPROMPT_PROJECT": str(project_dir)}
    proc = subprocess.Popen(
        [GRADPROMPT, "optimize", task, *ARGS], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(1.5)  # imports and the model load take longer than this
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from toolkit.project import open_project

    proj = open_project(project_dir)
    try:
        assert proj.store.db.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert all(r["status"] != "running" for r in proj.store.list_runs(proj.id))
    finally:
        proj.close()


def test_sigkill_mid_evaluation_then_the_rerun_reuses_and_matches(demo_project, tmp_path):
    from toolkit.demo import ensure_demo_task
    from toolkit.project import open_project

    project_dir, task = demo_project
    prompt = "Is this review positive or negative?"
    assert _cli(project_dir, "prompts", "add", task, prompt).returncode == 0
    env = {**os.environ, "GRADPROMPT_PROJECT": str(project_dir)}
    proc = subprocess.Popen(
        [GRADPROMPT, "eval", "1", "--limit", "40"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _kill_when(proc, project_dir, lambda store: store.db["results"].exists() and store.db["results"].count >= 5)
    proj = open_project(project_dir)
    kept = proj.store.db["results"].count
    assert proj.store.evaluations()[0]["status"] == "interrupted"
    assert proj.store.db.execute("pragma integrity_check").fetchone()[0] == "ok"
    proj.close()
    again = _cli(project_dir, "eval", "1", "--limit", "40", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    line = json.loads(again.stdout.strip().splitlines()[-1])
    assert line["n"] == 40 and line["cached"] >= kept >= 5
    # The same evaluation in a project that never saw this prompt: the same answer on every example.
    other = init_project(tmp_path / "other", name="other")
    ensure_demo_task(other)
    other.close()
    assert _cli(tmp_path / "other", "prompts", "add", task, prompt).returncode == 0
    clean = _cli(tmp_path / "other", "eval", "1", "--limit", "40", "--json")
    ref = json.loads(clean.stdout.strip().splitlines()[-1])
    assert ref["cached"] == 0 and ref["correct"] == line["correct"]
    a, b = open_project(project_dir), open_project(tmp_path / "other")
    try:
        pa = [(r["input"], r["predicted"]) for r in a.store.example_results(a.store.evaluations()[-1]["id"])]
        pb = [(r["input"], r["predicted"]) for r in b.store.example_results(b.store.evaluations()[-1]["id"])]
        assert pa == pb
    finally:
        a.close()
        b.close()
