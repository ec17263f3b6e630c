"""Each baseline optimizer for a step or two on the default model (llama.cpp) with a tiny budget."""

import pytest

from toolkit.baselines import COT_PROMPT, BaselineConfig, optimize_baseline
from toolkit.demo import ensure_demo_task


@pytest.mark.parametrize("method", ["ape", "opro"])
def test_text_optimizers_produce_store_and_respect_the_budget(project, llama, method):
    task = ensure_demo_task(project)
    cfg = BaselineConfig(method=method, budget_s=6, max_steps=2, n_train=4, n_dev=4, candidates_per_step=2)
    result = optimize_baseline(project, task["name"], model=llama, config=cfg)
    assert result.status == "done" and 1 <= result.steps <= 2
    run = project.store.run(result.run_id)
    assert run["method"] == method and run["model_sha256"] == llama.sha256
    assert run["config"]["sampling"]["temperature"] == cfg.temperature
    # the budget: a step starts only while time is left (the step in flight may finish past it); checked on the
    # stored step times, not on the wall clock of a loaded machine
    steps = project.store.steps(result.run_id)
    assert sum(sum(s["timings"].values()) for s in steps[:-1]) < cfg.budget_s
    assert run["timings"]["usage"]["generated_tokens"] > 0
    steps = project.store.steps(result.run_id)
    proposed = [c["text"] for s in steps for c in s["candidates"]]
    assert proposed and all(isinstance(t, str) and t for t in proposed)
    prompts = [p["text"] for p in project.store.list_prompts(project.id)]
    assert result.prompt in prompts
    assert result.dev_accuracy is not None


def test_cot_and_initial(project, llama):
    task = ensure_demo_task(project)
    for method, expected in (("cot", COT_PROMPT), ("initial", "Say positive or negative.")):
        result = optimize_baseline(
            project,
            task["name"],
            model=llama,
            initial_prompt="Say positive or negative.",
            config=BaselineConfig(method=method, n_train=3, n_dev=3),
        )
        assert result.prompt == expected and result.steps == 0


def test_bench_runs_resumes_and_reports(project, llama, tmp_path):
    from toolkit.bench import BenchConfig, collect, run_bench, write_report

    task = ensure_demo_task(project)
    cfg = BenchConfig(
        tasks=(task["name"],),
        methods=("initial", "cot", "ape"),
        budget_s=3,
        n_train=3,
        n_dev=3,
        n_test=4,
        initial_prompt="Say positive or negative.",
    )
    bench_id, cells = run_bench(project, cfg)
    assert {c.method for c in cells} == {"initial", "cot", "ape"} and all(c.n == 4 for c in cells)
    by = {c.method: c for c in cells}
    assert by["initial"].prompt == "Say positive or negative."  # --initial-prompt reaches every method
    for m in ("cot", "ape"):  # the paired test against the initial prompt, on the same test examples
        c = by[m]
        assert c.wins is not None and c.wins + c.losses <= 4 and 0 <= c.p_value <= 1
        if c.prompt == by["initial"].prompt:
            assert c.wins == c.losses == 0 and c.p_value == 1.0
    assert by["cot"].prompt == COT_PROMPT
    runs_before = len(project.store.bench_runs(bench_id))
    bench_id2, cells2 = run_bench(project, None, bench_id=bench_id)  # nothing left to do
    assert bench_id2 == bench_id and len(project.store.bench_runs(bench_id)) == runs_before
    md, png = write_report(project, bench_id, tmp_path)
    text = md.read_text()
    assert "| task | initial | cot | ape |" in text and "**average**" in text
    assert "| significant vs initial (p < 0.05) |" in text and "McNemar" in text
    assert "'Say positive or negative.'" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(collect(project, bench_id)) == 3


def test_ctrl_c_marks_a_baseline_run_stopped_like_a_greater_run(project, llama):
    """Ctrl-C (a KeyboardInterrupt during a step) leaves a baseline run `stopped` and resumable, as it does a
    GReaTer run; any other error is `failed`."""
    task = ensure_demo_task(project)
    cfg = BaselineConfig(method="ape", budget_s=30, max_steps=3, n_train=4, n_dev=4, candidates_per_step=2)

    def ctrl_c(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize_baseline(project, task["name"], model=llama, config=cfg, on_step=ctrl_c)
    [run] = project.store.list_runs(project.id)
    assert run["status"] == "stopped" and run["method"] == "ape"
    assert project.store.check_resumable(run["id"])["id"] == run["id"]

    def broken(record):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        optimize_baseline(project, task["name"], model=llama, config=cfg, on_step=broken)
    assert [r["status"] for r in project.store.list_runs(project.id)] == ["stopped", "failed"]


def test_bench_agreement_table_pools_the_tasks_with_a_sign_test():
    from toolkit.bench import BenchCell, agreement_table

    def cell(task, values, method="greater"):
        return BenchCell(task, method, 1, "p", 0.5, (0.4, 0.6), 10, 1.0, agreement=values)

    cells = [
        cell("a", [0.5, 0.25, -0.1, 0.0]),
        cell("b", [0.3, 0.2, 0.1, 0.4, 0.6, 0.7]),
        cell("c", [-0.9], method="greater-random"),  # only GReaTer's own rows count
    ]
    rows = agreement_table(cells, ["a", "b", "c"]).splitlines()
    assert [r.split(" | ")[0] for r in rows[2:]] == ["| a", "| b", "| **all tasks**"]
    a, b, pooled = (r.split(" | ") for r in rows[2:])
    assert a[1:5] == ["4", "+0.25", "+0.00 to +0.25", "2/4"] and float(a[5].rstrip(" |")) == 1.0  # 2 up, 1 down
    assert float(b[5].rstrip(" |")) == pytest.approx(2 / 64, abs=1e-3)  # 6 of 6 positive: 2 * 0.5**6
    assert pooled[1] == "10" and pooled[4] == "8/10"
    assert float(pooled[5].rstrip(" |")) == pytest.approx(2 * 10 / 2**9, abs=1e-3)  # 8 up, 1 down (the 0 left out)


def test_kshot_takes_random_pool_rows_never_scored_on_themselves(project, llama):
    """kshot: the start with n_shots rows of the demonstrations' pool (train rows beyond n_train), no search;
    the final prompt version carries them and its run says what it is."""
    task = ensure_demo_task(project)
    cfg = BaselineConfig(method="kshot", n_train=4, n_dev=4, n_shots=36)  # the whole pool: 40 rows less 4
    result = optimize_baseline(
        project, task["name"], model=llama, config=cfg, initial_prompt="Say positive or negative."
    )
    assert result.status == "done" and result.steps == 0
    assert result.prompt == "Say positive or negative." and result.demos and len(result.demos) == 36
    train = project.store.examples(task["id"], "train")
    scored = {ex["input"] for ex in train[:4]}
    pool = {ex["input"] for ex in train[4:]}
    assert all(i in pool and i not in scored for i, _ in result.demos)
    row = project.store.prompt(result.prompt_id)
    assert row["demos"] and row["id"] != result.initial_prompt_id  # a new version: the start with demonstrations
    assert project.store.run(result.run_id)["config"]["bench_method"] == "kshot"


def test_kshot_dev_takes_the_best_set_on_dev_with_the_start_first(project, llama):
    """kshot-dev (DSPy's random search): the zero-shot start is the first candidate; each set is scored on the
    dev rows; the best on dev is taken (the first of equals)."""
    task = ensure_demo_task(project)
    cfg = BaselineConfig(method="kshot-dev", n_train=4, n_dev=4, n_shots=2, max_steps=3, budget_s=600)
    result = optimize_baseline(
        project, task["name"], model=llama, config=cfg, initial_prompt="Say positive or negative."
    )
    steps = project.store.steps(result.run_id)
    assert result.status == "done" and len(steps) == 3
    sets = steps[-1]["state"]["sets"]
    assert sets[0][1] == [] and all(1 <= len(d) <= 2 for _, d in sets[1:])  # the start first, then 1..n_shots
    best_acc = max(acc for acc, _ in sets)
    first_best = next(d for acc, d in sets if acc == best_acc)
    assert result.dev_accuracy == best_acc
    assert (result.demos or []) == first_best
    if not first_best:  # the start was best: the run takes it as it is
        assert result.prompt_id == result.initial_prompt_id


def test_bench_reference_prompt_is_a_column_tested_against_the_start(project, llama, tmp_path):
    from toolkit.bench import BenchConfig, run_bench, write_report

    task = ensure_demo_task(project)
    cfg = BenchConfig(
        tasks=(task["name"],),
        methods=("initial", "kshot"),
        n_train=3,
        n_dev=3,
        n_test=4,
        initial_prompt="Say positive or negative.",
        reference_prompt="Is the review positive or negative?",
    )
    bench_id, cells = run_bench(project, cfg)
    by = {c.method: c for c in cells}
    assert set(by) == {"initial", "reference", "kshot"}
    assert by["reference"].prompt == "Is the review positive or negative?"
    ref = {r["example_id"]: r["correct"] for r in project.store.results(by["reference"].evaluation_id)}
    start = {r["example_id"]: r["correct"] for r in project.store.results(by["initial"].evaluation_id)}
    assert by["reference"].wins == sum(1 for k in ref if ref[k] and not start[k])  # against the start, not itself
    assert by["reference"].losses == sum(1 for k in ref if start[k] and not ref[k])
    # the start is scored on test once per task and reused by every method's paired test
    start_evals = [
        e
        for e in project.store.evaluations(task_id=task["id"])
        if e["split"] == "test" and e["prompt_id"] == project.store.run(by["initial"].run_id)["best_prompt_id"]
    ]
    assert len(start_evals) == 1
    md, _ = write_report(project, bench_id, tmp_path)
    assert "| task | initial | reference | kshot |" in md.read_text()
