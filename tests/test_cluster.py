"""Benches and evaluations fanned out over a Ray cluster (toolkit.cluster): one writer, nothing lost or doubled.

The merge of a worker's rows into the driver's history needs no Ray (fast); the rest start a local Ray cluster in
this process (``ray.init(num_cpus=2)``, the slow lane: the ``ray_cluster`` fixture) and compare what a bench and
an evaluation store with and without it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit.cluster import WorkerProject, history_snapshot, import_rows
from toolkit.lifecycle import drive
from toolkit.tasks import read_task_file

sys.path.insert(0, str(Path(__file__).parent))
from conftest import stored_evaluation  # noqa: E402
from test_lifecycle import FakeOptimizer  # noqa: E402

# -------------------------------------------------------------------------------------------- the merge (no Ray)


def _task_and_start(project, tmp_path):
    path = tmp_path / "yn.csv"
    path.write_text("input,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(20)))
    task = project.store.task_by_id(project.store.add_task(project.id, read_task_file(path, name="yn")))
    return task, project.add_prompt(task, "Answer.", origin="initial")


def _a_run_on_a_worker(wp: WorkerProject, task_name: str, start: int, tag: str) -> dict:
    """What a bench cell does in its copy: a run (4 steps, a final prompt), a test evaluation of the start with
    its answers, and a tag on a prompt the copy already had."""
    project, store = wp.project, wp.project.store
    task = store.task(project.id, task_name)
    run_id = store.create_run(
        project_id=project.id,
        task_id=task["id"],
        method="fake",
        model_id="fake",
        model_sha256="x",
        config={"task": task_name},
        seed=0,
        versions={},
        initial_prompt_id=start,
    )
    drive(project, task, run_id, FakeOptimizer(), {"step": 0, "prompt": "Answer."}, start, None, None)
    examples = store.examples(task["id"], "test")
    stored_evaluation(store, start, task, examples, [ex["answer"] == "yes" for ex in examples])
    store.update_prompt_meta(start, add_tags=[tag])
    return wp.new_rows()


def test_a_workers_rows_are_stored_with_new_ids_and_nothing_twice(project, tmp_path):
    task, start = _task_and_start(project, tmp_path)
    snapshot = history_snapshot(project.store)
    with WorkerProject(snapshot, project.settings) as a, WorkerProject(snapshot, project.settings) as b:
        rows_a = _a_run_on_a_worker(a, "yn", start, "from-a")
        rows_b = _a_run_on_a_worker(b, "yn", start, "from-b")
    assert rows_a["runs"][0]["id"] == rows_b["runs"][0]["id"]  # both copies gave their run the same id
    project.add_prompt(task, "Something the user wrote meanwhile.", origin="user")  # the driver moved on
    maps_a = import_rows(project, rows_a)
    maps_b = import_rows(project, rows_b)
    store = project.store
    runs = store.list_runs(project.id)
    assert len(runs) == 2 and len({r["id"] for r in runs}) == 2
    for maps in (maps_a, maps_b):
        [run_id] = maps["runs"].values()
        assert [s["step"] for s in store.steps(run_id)] == [1, 2, 3, 4]  # each run's own steps
        run = store.run(run_id)
        assert run["status"] == "done" and run["initial_prompt_id"] == start
        best = store.prompt(run["best_prompt_id"])
        assert best["text"] == "Answer. w1 w2 w3 w4" and best["parent_id"] == start
    # the same final prompt twice is one library version (as a local run reuses it), with its file
    finals = [p for p in store.list_prompts(project.id, task["id"]) if p["text"] == "Answer. w1 w2 w3 w4"]
    assert len(finals) == 1 and finals[0]["run_id"] == list(maps_a["runs"].values())[0]
    assert (project.path / "prompts" / "yn" / f"{finals[0]['id']:04d}.txt").is_file()
    assert len(store.list_prompts(project.id, task["id"])) == 3  # start, the user's, the final: nothing twice
    # the start's test evaluation, scored in both copies, is stored once with its answers once
    evs = store.evaluations(prompt_id=start, task_id=task["id"])
    assert len(evs) == 1 and len(store.results(evs[0]["id"])) == len(store.examples(task["id"], "test"))
    assert {"from-a", "from-b"} <= set(store.prompt_tags(start))  # tags added to an existing prompt are kept


def test_an_import_that_fails_stores_nothing(project, tmp_path, monkeypatch):
    task, start = _task_and_start(project, tmp_path)
    with WorkerProject(history_snapshot(project.store), project.settings) as wp:
        rows = _a_run_on_a_worker(wp, "yn", start, "t")
    before = {t: project.store.db[t].count for t in ("runs", "prompts", "steps", "evaluations", "results")}

    def full_disk(prompt_id):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(project, "write_prompt_file", full_disk)
    with pytest.raises(OSError):
        import_rows(project, rows)
    after = {t: project.store.db[t].count for t in before}
    assert after == before and "t" not in project.store.prompt_tags(start)
    assert sorted(p.name for p in (project.path / "prompts" / "yn").iterdir()) == [f"{start:04d}.txt"]


def test_ray_is_not_imported_without_ray():
    code = (
        "import sys, toolkit.cli, toolkit.bench, toolkit.evaluate, toolkit.cluster, tui.app; "
        "from toolkit.cli import main; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_ray_installed_the_user_is_told_how_to_get_it(monkeypatch):
    from toolkit.cluster import connect
    from toolkit.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    with pytest.raises(ConfigError, match=r"gradprompt\[cluster\]"):
        connect("auto")


# ------------------------------------------------------------------------------------------ a local Ray cluster


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _bench_project(path, tasks=("sentiment", "topic")):
    from toolkit.demo import ensure_demo_task
    from toolkit.project import init_project

    project = init_project(path, name="b")
    names = tuple(ensure_demo_task(project, which)["name"] for which in tasks)
    return project, names


def _config(names):
    from toolkit.bench import BenchConfig

    return BenchConfig(
        tasks=names,
        methods=("initial", "cot"),
        budget_s=3,
        n_train=3,
        n_dev=3,
        n_test=6,
        initial_prompt="Say positive or negative.",
    )


def _stored(project, bench_id):
    """Per (task, method): the final prompt, the test accuracy, and each test example's correctness."""
    from toolkit.bench import collect

    out = {}
    for c in collect(project, bench_id):
        ex = {r["example_id"]: r["correct"] for r in project.store.results(c.evaluation_id)}
        out[(c.task, c.method)] = (c.prompt, c.accuracy, c.n, c.wins, c.losses, sorted(ex.items()))
    return out


def test_a_bench_on_ray_stores_what_it_stores_without_ray(ray_cluster, tmp_path):
    from toolkit.bench import run_bench

    here, names = _bench_project(tmp_path / "here")
    there, _ = _bench_project(tmp_path / "there")
    local_id, _ = run_bench(here, _config(names))
    said = []
    ray_id, _ = run_bench(there, _config(names), cluster=ray_cluster, progress=said.append)
    assert there.store.bench(ray_id)["status"] == "done"
    assert _stored(there, ray_id) == _stored(here, local_id) and len(_stored(here, local_id)) == 4
    assert sum("done (on" in s for s in said) == 4  # progress as cells finish
    for project, bench_id in ((here, local_id), (there, ray_id)):
        runs = project.store.bench_runs(bench_id)
        assert sorted((r["config"]["task"], r["method"]) for r in runs) == sorted(
            (t, m) for t in names for m in ("initial", "cot")
        )
    # the start's test evaluation is stored once per task, as a local bench stores it
    for t in names:
        task = there.store.task(there.id, t)
        start = there.store.find_prompt(there.id, task["id"], "Say positive or negative.")
        assert len([e for e in there.store.evaluations(prompt_id=start["id"]) if e["split"] == "test"]) == 1
    # every prompt the cluster's runs made has its library file
    for p in there.store.list_prompts(there.id):
        task = there.store.task_by_id(p["task_id"])["name"]
        assert (there.path / "prompts" / task / f"{p['id']:04d}.txt").is_file()


def test_a_cell_that_raises_is_reported_and_the_others_are_stored(ray_cluster, tmp_path, monkeypatch):
    import toolkit.bench as bench

    project, names = _bench_project(tmp_path / "p")
    broken = (names[1], "cot")

    def flaky(snapshot, settings, config, bench_id, task, method, model_id, sha):
        if (task, method) == broken:
            raise RuntimeError("this cell breaks")
        from toolkit.bench import _cell_on_worker

        return _cell_on_worker(snapshot, settings, config, bench_id, task, method, model_id, sha)

    monkeypatch.setattr(bench, "_cell_on_worker", flaky)
    said = []
    bench_id, cells = bench.run_bench(project, _config(names), cluster=ray_cluster, progress=said.append)
    assert {(c.task, c.method) for c in cells} == {(t, m) for t in names for m in ("initial", "cot")} - {broken}
    assert project.store.bench(bench_id)["status"] == "failed"
    assert any(f"{broken[0]}: cot: failed: RuntimeError: this cell breaks" in s for s in said)
    # a re-run does only what is missing
    monkeypatch.undo()
    bench_id, cells = bench.run_bench(project, None, bench_id=bench_id, cluster=ray_cluster)
    assert len(cells) == 4 and project.store.bench(bench_id)["status"] == "done"
    assert len(project.store.bench_runs(bench_id)) == 4


def test_a_killed_driver_loses_only_cells_in_flight_and_a_rerun_stores_each_cell_once(ray_cluster, tmp_path):
    project, names = _bench_project(tmp_path / "p", tasks=("sentiment", "topic"))
    project.close()
    exe = str(Path(sys.executable).parent / "gradprompt")
    args = [
        exe,
        "--project",
        str(tmp_path / "p"),
        "bench",
        "--method",
        "initial",
        "--method",
        "cot",
        "--method",
        "kshot",
        "--budget",
        "3",
        "--train-size",
        "3",
        "--dev-size",
        "3",
        "--test-size",
        "6",
    ]
    for n in names:
        args += ["--task", n]
    driver = subprocess.Popen(args + ["--ray", ray_cluster], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    from toolkit.project import open_project

    project = open_project(tmp_path / "p")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and driver.poll() is None:
        if project.store.db["runs"].count >= 1:
            break
        time.sleep(0.5)
    assert driver.poll() is None, driver.stdout.read().decode()
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    stored = project.store.db["runs"].count
    assert 1 <= stored < 6  # killed mid-run: some cells stored, some lost in flight
    [bench] = project.store.list_benches(project.id)
    again = subprocess.run(
        [exe, "--project", str(tmp_path / "p"), "bench", "--resume", str(bench["id"]), "--ray", ray_cluster],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    runs = project.store.bench_runs(bench["id"])
    cells = [(r["config"]["task"], r["config"].get("bench_method", r["method"])) for r in runs]
    assert sorted(cells) == sorted((t, m) for t in names for m in ("initial", "cot", "kshot"))  # each once
    assert "Ray" not in again.stderr and "WARNING" not in again.stdout + again.stderr  # no library noise


def test_a_sharded_evaluation_stores_the_answers_of_a_local_one(ray_cluster, project, llama):
    from toolkit.demo import ensure_demo_task
    from toolkit.evaluation import evaluate_prompt

    task = ensure_demo_task(project)
    row = project.store.prompt(project.add_prompt(task, "Is this review positive or negative?", origin="user"))

    def answers(ev):
        return sorted((r["example_id"], r["predicted"], r["correct"]) for r in project.store.results(ev))

    local = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=row, limit=10)
    expected = answers(local.evaluation_id)
    again = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=row, limit=10, cluster=ray_cluster)
    assert again.cached == 10 and again.model_calls == 0  # stored answers are not sent to the cluster
    with project.store.db.conn:  # forget the answers, so that the cluster scores every example
        project.store.db.conn.execute("delete from results")
    sharded = evaluate_prompt(
        project.store, model=llama, task_row=task, prompt_row=row, limit=10, cluster=ray_cluster, shard_size=3
    )
    assert sharded.cached == 0 and sharded.model_calls == 10 and sharded.n == 10
    assert (sharded.correct, sharded.confusion) == (local.correct, local.confusion)
    assert answers(sharded.evaluation_id) == expected
    assert project.store.evaluation(sharded.evaluation_id)["status"] == "done"


def test_a_stop_cancels_the_tasks_still_on_the_cluster(ray_cluster):
    """A stop (the TUI's, or Ctrl-C: the same path) ends the fan-out at once and cancels what is still queued or
    running on the cluster; nothing more is delivered."""
    import threading

    import ray

    from toolkit.cluster import fan_out

    def sleepy(i):
        time.sleep(0 if i == 0 else 600)
        return i

    stop, got = threading.Event(), []

    def on_result(key, value):
        got.append(value)
        stop.set()

    t0 = time.monotonic()
    fan_out(ray, sleepy, [(i, (i,)) for i in range(6)], on_result=on_result, on_error=got.append, stop=stop)
    assert got == [0] and time.monotonic() - t0 < 120  # the 600 s tasks were cancelled, not waited for


def test_a_worker_with_another_version_or_chat_template_is_not_stored():
    """Bench cells and evaluation shards are stored only from workers that run the same gradprompt and render
    the same chat template for the model (one check for both)."""
    import dataclasses

    from toolkit.cluster import mismatch, worker_identity
    from toolkit.models import get_model

    info = get_model()
    mine = worker_identity(info)
    assert mismatch(worker_identity(info), mine) is None
    assert "gradprompt 0.0.0, this machine" in (mismatch({**mine, "version": "0.0.0"}, mine) or "")
    other = dataclasses.replace(info, chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert "chat template" in (mismatch(worker_identity(other), mine) or "")
    assert worker_identity(other)["template"] != mine["template"] == ""  # the default model renders its file's
