"""Dead runs look dead: a run or evaluation whose process is gone reads `interrupted`; a live one cannot be
resumed twice (real processes, real SQLite)."""

import json
import os
import signal
import subprocess
import sys

import pytest

from toolkit import owner
from toolkit.errors import ConfigError
from toolkit.store import Store


def _run(store):
    pid = store.ensure_project("p", "/tmp/p")
    return store.create_run(
        project_id=pid,
        task_id=None,
        method="greater",
        model_id="m",
        model_sha256="x",
        config={"greater": {"steps": 3}},
        seed=0,
        versions={},
        initial_prompt_id=None,
    )


def _owner_of(proc) -> str:
    return json.dumps({"host": json.loads(owner.me())["host"], "pid": proc.pid, "start": owner._start_time(proc.pid)})


def _evaluation(store):
    pid = store.ensure_project("p", "/tmp/p")
    prompt = store.add_prompt(pid, None, "think", origin="initial")
    return store.create_evaluation(
        prompt_id=prompt, task_id=None, split="test", backend="llamacpp", model_id="m", settings={}, n=1
    )


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_running_row_records_this_process_and_reads_running(tmp_path):
    store = Store(tmp_path / "h.db")
    run_id = _run(store)
    row = store.run(run_id)
    assert json.loads(row["owner"])["pid"] == os.getpid()
    assert row["status"] == "running" and owner.alive(row["owner"]) is True
    ev = _evaluation(store)
    assert store.evaluation(ev)["status"] == "running"


def test_a_killed_owner_reads_interrupted_and_may_be_resumed(tmp_path, sleeper):
    store = Store(tmp_path / "h.db")
    run_id = _run(store)
    ev = _evaluation(store)
    bench = store.create_bench(store.ensure_project("p", "/tmp/p"), "b", {})
    who = _owner_of(sleeper)
    for table, pk in (("runs", run_id), ("evaluations", ev), ("benches", bench)):
        store.db[table].update(pk, {"owner": who})
    assert store.run(run_id)["status"] == "running"  # alive
    with pytest.raises(ConfigError, match=f"running in process {sleeper.pid}"):
        store.check_resumable(run_id)
    with pytest.raises(ConfigError, match="cannot be resumed twice"):
        store.claim_run(run_id)
    assert store.db["runs"].get(run_id)["owner"] == who  # the refused claim changed nothing
    sleeper.send_signal(signal.SIGKILL)
    sleeper.wait()
    assert store.run(run_id)["status"] == "interrupted"
    assert [r["status"] for r in store.list_runs(1)] == ["interrupted"]
    assert store.evaluation(ev)["status"] == "interrupted"
    assert store.bench(bench)["status"] == "interrupted"
    claimed = store.claim_run(run_id)
    assert claimed["status"] == "running" and json.loads(claimed["owner"])["pid"] == os.getpid()


def test_a_reused_pid_is_not_the_owner(tmp_path, sleeper):
    store = Store(tmp_path / "h.db")
    run_id = _run(store)
    fake = json.loads(_owner_of(sleeper))
    fake["start"] = str(int(fake["start"] or 0) + 12345)  # same pid, another process start time
    store.db["runs"].update(run_id, {"owner": json.dumps(fake)})
    assert store.run(run_id)["status"] == "interrupted"


def test_an_owner_on_another_machine_needs_force(tmp_path):
    store = Store(tmp_path / "h.db")
    run_id = _run(store)
    store.db["runs"].update(run_id, {"owner": json.dumps({"host": "elsewhere", "pid": 1, "start": "1"})})
    assert store.run(run_id)["status"] == "running"  # cannot tell: not shown as dead
    with pytest.raises(ConfigError, match="--force"):
        store.claim_run(run_id)
    assert store.claim_run(run_id, force=True)["status"] == "running"


def test_finished_runs_are_never_claimed(tmp_path):
    store = Store(tmp_path / "h.db")
    run_id = _run(store)
    store.update_run(run_id, status="done")
    with pytest.raises(ConfigError, match="already finished"):
        store.claim_run(run_id, force=True)


@pytest.mark.slow  # two processes race for a claim
def test_two_claims_at_once_one_wins(tmp_path, sleeper):
    """Two processes resuming the same interrupted run: exactly one claim succeeds."""
    path = tmp_path / "h.db"
    store = Store(path)
    run_id = _run(store)
    store.update_run(run_id, status="stopped")
    store.close()
    code = (
        "import sys; from toolkit.store import Store; s = Store(sys.argv[1])\n"
        "try:\n    s.claim_run(int(sys.argv[2])); print('won')\n"
        "except Exception as e:\n    print('refused', e)\n"
        "import time; time.sleep(3)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path), str(run_id)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(os.path.dirname(__file__)),
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert sorted(o.split()[0] for o in outs) == ["refused", "won"], outs
