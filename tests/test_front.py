"""Which model and quantization to deploy on: the size/accuracy front, from measurement."""

import json

import pytest
from test_discover import tiny_gguf
from test_evaluation_loop import FakeRuntime

from toolkit.front import FrontRow, mark_front, measure_front, pareto_front


def test_the_front_excludes_dominated_points_and_keeps_ties():
    points = [(100, 0.80), (50, 0.80), (50, 0.80), (30, 0.60), (40, 0.55), (200, 0.85), (120, 0.70)]
    assert pareto_front(points) == [False, True, True, True, False, True, False]
    # (100, .80) loses to (50, .80): no larger, as accurate; (40, .55) to (30, .60); (120, .70) to (50, .80)
    assert pareto_front([(10, 0.5)]) == [True]


def test_each_prompt_has_its_own_front():
    def row(pid, size, acc):
        return FrontRow("m", "m", "Q8_0", pid, 1, size, None, None, acc, (0, 1), 10)

    rows = mark_front([row(1, 10, 0.5), row(1, 20, 0.4), row(2, 10, 0.4), row(2, 20, 0.6)])
    assert [r.on_front for r in rows] == [True, False, True, True]


class _Biased(FakeRuntime):
    """The fake runtime with the label rule flipped for inputs containing ``flip``: a worse quantization."""

    def __init__(self, flip):
        super().__init__()
        self.flip = flip

    def next_logits(self, tokens):
        logits = super().next_logits(tokens)
        if self.flip in {self.words[t] for t in tokens}:
            yes, no = self.encode(" yes")[-1], self.encode(" no")[-1]
            logits[yes], logits[no] = logits[no], logits[yes]
        return logits


def test_sizes_come_from_the_files_and_tests_are_paired_against_the_most_precise(project, tmp_path, monkeypatch):
    from test_evaluation_loop import _task

    from toolkit.models import add_model, get_model

    monkeypatch.setenv("GRADPROMPT_HOME", str(tmp_path / "home"))
    # a "q2_k" by name whose file is the largest: the size is what is on disk, never what a name says
    files = {"m-f16": (1, 200), "m-q8_0": (7, 100), "m-q2_k": (10, 400)}
    for mid, (ftype, rows) in files.items():
        gguf = tmp_path / f"{mid}.gguf"
        tiny_gguf(gguf, ftype=ftype)
        with gguf.open("ab") as fh:
            fh.write(b"\0" * rows * 64)
        add_model(mid, gguf=str(gguf))
    for mid in ("m-q8_0", "m-q2_k"):  # as `models quantize` records its variants
        path = get_model(mid).manifest_path
        with open(path, "a") as fh:
            fh.write('\n[derived_from]\nmodel = "m-f16"\n')
    task = _task(project, tmp_path)
    prompt = project.add_prompt(task, "Is it good?", origin="manual")
    runtimes = {"m-f16": FakeRuntime(), "m-q8_0": _Biased("dull"), "m-q2_k": _Biased("film")}
    for mid, runtime in runtimes.items():  # each variant its own file, its own cache
        runtime.info, runtime.sha256 = get_model(mid), mid
    rows = measure_front(project, [prompt], list(files), load=lambda mid: runtimes[mid])
    by = {r.model_id: r for r in rows}
    for mid in files:
        assert by[mid].size_bytes == (tmp_path / f"{mid}.gguf").stat().st_size
        assert by[mid].examples_per_s and by[mid].examples_per_s > 0 and by[mid].n == 10
        assert by[mid].reference == "m-f16"
    assert by["m-f16"].quantization == "F16" and by["m-f16"].p_value is None
    assert (by["m-q8_0"].accuracy, by["m-q8_0"].fixed, by["m-q8_0"].broken) == (1.0, 2, 0)  # "dull": now right
    assert (by["m-q2_k"].fixed, by["m-q2_k"].broken) == (0, 4)  # "film": the four film reviews flip to wrong
    assert [by[m].on_front for m in ("m-q8_0", "m-f16", "m-q2_k")] == [True, False, False]
    stored = {r["id"] for r in project.store.evaluations(prompt_id=prompt)}
    assert {r.evaluation_id for r in rows} <= stored  # stored like any evaluation


@pytest.mark.slow  # llama.cpp on the real GGUF
def test_compare_front_on_the_default_model(project, tmp_path):
    """The command: a table, a chart and the rows as JSON in reports/ (llama.cpp on the real GGUF)."""
    from click.testing import CliRunner

    from toolkit.cli import cli
    from toolkit.demo import ensure_demo_task

    task = ensure_demo_task(project)
    pid = project.add_prompt(task, "Is this review positive or negative?", origin="manual")
    res = CliRunner().invoke(
        cli,
        ["--project", str(project.path), "compare", str(pid), "--front", "--model", "smollm2-135m", "--limit", "4"],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "| smollm2-135m | Q4_1 |" in res.output and "**yes**" in res.output
    reports = sorted((project.path / "reports").glob("front-*.json"))
    data = json.loads(reports[-1].read_text())
    assert data[0]["size_bytes"] > 50_000_000 and data[0]["peak_rss_mb"] > 10 and data[0]["n"] == 4
    assert reports[-1].with_suffix(".png").is_file() and reports[-1].with_suffix(".md").is_file()
