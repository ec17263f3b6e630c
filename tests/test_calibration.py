"""Label calibration (toolkit.calibration) and the final choice's library: fitted on training rows only, stored
with the prompt version, applied by every evaluation, carried by exports; every compared candidate is kept."""

import json
import math

import pytest

from toolkit.calibrate import calibrated_version
from toolkit.calibration import Calibration, fit
from toolkit.errors import ConfigError
from toolkit.lifecycle import CANDIDATE_TAG, Finished, drive
from toolkit.store import Store, migrations
from toolkit.tasks import read_task_file

LABELS = ("negative", "positive")


def test_batch_calibration_removes_a_constant_label_bias():
    # the model prefers "negative" by 2 nats on every input; the evidence moves the scores by +-1
    rows = [[2.0 - e, e] for e in (-1, 1, -1, 1, 1, -1)]
    assert all(max(range(2), key=r.__getitem__) == 0 for r in rows)  # uncalibrated: always "negative"
    cal = fit("batch", rows, LABELS)
    assert cal.bias[0] < 0 < cal.bias[1] and sum(cal.bias) == pytest.approx(0.0)
    assert [cal.choose(r) for r in rows] == [0, 1, 0, 1, 1, 0]  # the evidence decides
    assert cal.n == 6 and cal.split == "train"
    # mean probability per label -> bias = -log(mean), centred
    p = [sum(math.exp(r[i]) / (math.exp(r[0]) + math.exp(r[1])) for r in rows) / 6 for i in range(2)]
    assert cal.bias[1] - cal.bias[0] == pytest.approx(math.log(p[0]) - math.log(p[1]))


def test_a_calibration_round_trips_and_is_checked_against_the_labels():
    cal = fit("contextual", [[0.3, -0.2, 0.1]], ("a", "b", "c"))
    assert cal.split == "content-free"
    back = Calibration.from_json(cal.to_json())
    assert back == Calibration.from_json(json.loads(cal.to_json())) and back.to_json() == cal.to_json()
    assert Calibration.from_json(None) is None and Calibration.from_json("") is None
    with pytest.raises(ConfigError, match="labels"):
        back.for_labels(("a", "b"))
    with pytest.raises(ConfigError, match="Unknown calibration"):
        fit("platt", [[0.0, 0.0]], LABELS)
    with pytest.raises(ConfigError, match="training rows"):
        fit("batch", [], LABELS)
    assert "contextual calibration (content-free inputs): a " in cal.describe()


class _Model:
    """A llama.cpp model at the seam: what calibrated_version needs besides the label scores."""

    chat_template = ""
    bos_token = ""
    eos_token = ""

    class info:
        id = "fake"


def _task(project, tmp_path, n=40):
    path = tmp_path / "reviews.csv"
    path.write_text(
        "input,target\n" + "".join(f"review number {i},{'positive' if i % 3 else 'negative'}\n" for i in range(n))
    )
    task_id = project.store.add_task(project.id, read_task_file(path, name="reviews"))
    return project.store.task_by_id(task_id)


def test_calibration_is_fitted_on_training_rows_only(project, tmp_path, monkeypatch):
    import toolkit.calibrate as calibration_module

    task = _task(project, tmp_path)
    seen = []

    def scores(model, layout, spec, prompt, input_text, settings):
        seen.append(input_text)
        return [1.0, 0.0]

    monkeypatch.setattr(calibration_module, "label_scores_for", scores)
    prompt = project.store.prompt(project.add_prompt(task, "Classify.", origin="manual"))
    row = calibrated_version(project, _Model(), task, prompt, "batch", rows=32)
    split = {e["input"]: e["split"] for e in project.store.examples(task["id"])}
    train = [e["input"] for e in project.store.examples(task["id"], "train")]
    assert seen and all(split[text] == "train" for text in seen)  # fails if a dev or test row leaks in
    assert seen == train[:32]
    # the calibrated version: same text, its own row, the calibration stored, the parent kept
    assert row["id"] != prompt["id"] and row["text"] == prompt["text"] and row["parent_id"] == prompt["id"]
    assert row["origin"] == "calibrated" and Calibration.from_json(row["calibration"]).n == len(seen)
    assert (
        "label decision: batch calibration"
        in (project.path / "prompts" / "reviews" / f"{row['id']:04d}.txt").read_text()
    )
    # asked again: the same version, not a new one; "none" gives the uncalibrated one
    assert calibrated_version(project, _Model(), task, prompt, "batch", rows=32)["id"] == row["id"]
    assert calibrated_version(project, _Model(), task, row, "none")["id"] == prompt["id"]
    seen.clear()
    contextual = calibrated_version(project, _Model(), task, prompt, "contextual")
    assert seen == ["N/A", "", "[MASK]"] and contextual["id"] not in (row["id"], prompt["id"])


def test_calibration_refuses_a_task_without_labels(project, tmp_path):
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps({"input": f"{a} + 1", "target": str(a + 1)}) + "\n" for a in range(12)))
    task = project.store.task_by_id(project.store.add_task(project.id, read_task_file(path, name="sums")))
    prompt = project.store.prompt(project.add_prompt(task, "Add.", origin="manual"))
    with pytest.raises(ConfigError, match="label tasks"):
        calibrated_version(project, _Model(), task, prompt, "batch")


def test_an_old_history_migrates_and_its_prompts_have_no_calibration(tmp_path):
    path = tmp_path / "h.db"
    old = Store(path)
    # the history as it was before m008: without the column the migration adds, and without its record
    old.db.execute("delete from _sqlite_migrations where name = 'm008_prompt_parts'")
    old.db["prompts"].transform(drop={"calibration", "demos"})
    assert "calibration" not in old.db["prompts"].columns_dict
    pid = old.ensure_project("p", "/x")
    prompt_id = old.db["prompts"].insert({"project_id": pid, "text": "old prompt", "origin": "manual"}).last_pk
    old.close()
    new = Store(path)
    assert "m008_prompt_parts" in [m.name for m in migrations.applied(new.db)]
    row = new.prompt(prompt_id)
    assert row["text"] == "old prompt" and row["calibration"] is None
    new.close()


class _FakeOptimizer:
    """The optimizer seam: no steps, and a final choice that compared three candidates and the start."""

    origin = "run"

    def __init__(self, top, prompt="Say positive or negative.", calibration=None):
        self.top, self.prompt, self.calibration = top, prompt, calibration

    def run(self, state, stop=None):
        return iter(())

    def current_prompt(self, state):
        return self.prompt

    def conclude(self, state):
        return Finished(
            prompt=self.prompt,
            train_accuracy=0.5,
            dev_accuracy=0.6,
            steps=0,
            top=self.top,
            selection={"significant": True, "reason": "test"},
            calibration=self.calibration,
        )


def _row(prompt, dev, wins, losses, p, *, passed=False, chosen=False, calibration=None):
    return {
        "prompt": prompt,
        "dev_accuracy": dev,
        "wins": wins,
        "losses": losses,
        "p_value": p,
        "level": 0.025,
        "passed": passed,
        "chosen": chosen,
        "calibration": calibration,
    }


def test_every_candidate_the_dev_test_compared_is_in_the_library_after_a_run(project, tmp_path):
    task = _task(project, tmp_path)
    start = project.add_prompt(task, "Answer the question.", origin="initial")
    cal = fit("batch", [[1.0, 0.0], [0.5, 0.2]], LABELS).to_dict()
    top = [
        _row("Say positive or negative.", 0.6, 6, 0, 0.0156, passed=True, chosen=True, calibration=cal),
        _row("Which one has been assigned to", 0.55, 5, 1, 0.11),
        _row("Answer the question.", 0.52, 3, 0, 0.125, calibration=cal),  # the calibrated start
        {"prompt": "Answer the question.", "dev_accuracy": 0.4, "initial": True, "train_score": None},
    ]
    run_id = project.store.create_run(
        project_id=project.id,
        task_id=task["id"],
        method="greater",
        model_id="fake",
        model_sha256="x",
        config={},
        seed=0,
        versions={},
        initial_prompt_id=start,
    )
    result = drive(project, task, run_id, _FakeOptimizer(top, calibration=cal), {"step": 0}, start, None, None)
    chosen = project.store.prompt(result.prompt_id)
    assert chosen["text"] == "Say positive or negative." and Calibration.from_json(chosen["calibration"]) is not None
    compared = [r for r in project.store.list_prompts(project.id, task["id"]) if CANDIDATE_TAG in r["tags"]]
    texts = sorted((r["text"], r["calibration"] is not None) for r in compared)
    assert texts == [
        ("Answer the question.", True),
        ("Say positive or negative.", True),
        ("Which one has been assigned to", False),
    ]
    rejected = next(r for r in compared if r["text"] == "Which one has been assigned to")
    assert "5 fixed and 1 broken" in rejected["note"] and "not adopted" in rejected["note"]
    assert rejected["run_id"] == run_id and rejected["parent_id"] == start
    # the run's stored table points at them (what `runs show` lists)
    stored = project.store.run(run_id)["timings"]["top"]
    assert all(r.get("prompt_id") for r in stored)
    assert stored[-1]["prompt_id"] == start
    # each is a library file too (both or neither)
    for r in compared:
        assert (project.path / "prompts" / "reviews" / f"{r['id']:04d}.txt").is_file()
    # `runs show` lists what the dev test compared, with ids a user can take
    from click.testing import CliRunner

    from toolkit.cli import cli

    res = CliRunner().invoke(cli, ["--project", str(project.path), "runs", "show", str(run_id)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Compared on dev" in res.output and "not adopted" in res.output and "adopted" in res.output
    assert str(rejected["id"]) in res.output and "Which one has been assigned to" in res.output
    assert "[+ calibration]" in res.output


@pytest.mark.slow
def test_eval_calibrate_scores_a_calibrated_version_and_reuses_it(project):
    """`gradprompt eval ID --calibrate batch` on the real default model: a calibrated version is fitted on the
    training rows, stored, scored; asked again, the same version and its cached answers."""
    from click.testing import CliRunner

    from toolkit.cli import cli
    from toolkit.demo import ensure_demo_task

    task = ensure_demo_task(project)
    pid = project.add_prompt(task, "Answer the question.", origin="manual")
    args = ["--project", str(project.path), "eval", str(pid), "--calibrate", "batch", "--calibrate-rows", "8"]
    first = CliRunner().invoke(cli, [*args, "--limit", "6", "--json"])
    assert first.exit_code == 0, first.output
    row = json.loads(first.output.strip().splitlines()[-1])
    assert row["prompt_id"] != pid and row["calibration"]["method"] == "batch" and row["calibration"]["n"] == 8
    assert row["n"] == 6 and row["cached"] == 0
    again = json.loads(CliRunner().invoke(cli, [*args, "--limit", "6", "--json"]).output.strip().splitlines()[-1])
    assert again["prompt_id"] == row["prompt_id"] and again["cached"] == 6
    shown = CliRunner().invoke(cli, ["--project", str(project.path), "prompts", "show", str(row["prompt_id"])])
    assert "Label decision: batch calibration (8 train rows)" in shown.output
    bad = CliRunner().invoke(cli, [*args, "--backend", "torch"])
    assert bad.exit_code != 0 and "--calibrate runs on the llama.cpp backend" in bad.output
