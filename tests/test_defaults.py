"""The product's defaults and method names are defined once (toolkit/defaults.py, toolkit/baselines.py) and every
face - the command line, the TUI's forms, the bench, the demo - reads them from there (issue 27)."""

import click

from toolkit import defaults
from toolkit.cli import cli


def _defaults_of(*path):
    command = cli
    for name in path:
        command = command.commands[name]
    return {p.name: p.default for p in command.params if isinstance(p, click.Option)}, command


def test_the_command_line_options_default_to_the_products_defaults():
    opt, optimize = _defaults_of("optimize")
    assert opt["steps"] == defaults.STEPS and opt["train_size"] == defaults.TRAIN_SIZE
    assert opt["dev_size"] == defaults.DEV_SIZE
    bench, _ = _defaults_of("bench")
    assert (bench["budget"], bench["train_size"], bench["dev_size"], bench["test_size"]) == (
        defaults.BENCH_BUDGET_S,
        defaults.TRAIN_SIZE,
        defaults.DEV_SIZE,
        defaults.TEST_SIZE,
    )
    demo, _ = _defaults_of("demo")
    assert demo["budget"] == defaults.BUDGET_S and demo["test_size"] == defaults.TEST_SIZE


def test_method_names_are_one_list_for_every_face():
    from toolkit.baselines import METHODS, RUN_METHODS
    from toolkit.bench import ALL_METHODS

    opt, optimize = _defaults_of("optimize")
    method = next(p for p in optimize.params if p.name == "method")
    assert tuple(method.type.choices) == RUN_METHODS
    assert set(RUN_METHODS) == {"greater", *METHODS} and set(METHODS) <= set(ALL_METHODS)


def test_the_core_and_the_tui_forms_read_the_defaults_when_they_run(monkeypatch):
    """Changed in toolkit/defaults.py, a default changes where it is read at run time (the TUI's run form)."""
    from tui.forms import run_config_from_form

    monkeypatch.setattr(defaults, "BUDGET_S", 77.0)
    kind, config = run_config_from_form({"method": "ape", "steps": "3", "train": "4", "dev": "4", "seed": "0"})
    assert kind == "baseline" and config.budget_s == 77.0


def test_the_bench_and_baseline_settings_start_from_the_defaults():
    from toolkit.baselines import BaselineConfig
    from toolkit.bench import BenchConfig

    bench = BenchConfig(tasks=("t",))
    assert (bench.budget_s, bench.n_train, bench.n_dev, bench.n_test) == (
        defaults.BENCH_BUDGET_S,
        defaults.TRAIN_SIZE,
        defaults.DEV_SIZE,
        defaults.TEST_SIZE,
    )
    assert BaselineConfig().budget_s == defaults.BUDGET_S


def test_a_baseline_compares_on_dev_what_fits_in_half_its_budget():
    """One budget for a baseline: its final dev test (the start and the best prompts by training score) is set
    aside from the budget, at the slowest per-example time seen, and compares as many prompts as fit in half of it
    (at least one), so a short budget on a slow machine still leaves time to propose (OPRO at 120 s with 60 dev
    rows at 0.5 s an example had no time at all when it compared four)."""
    from types import SimpleNamespace

    from toolkit.baselines import BaselineConfig, BaselineOptimizer
    from toolkit.tasks import AnswerSpec

    model = SimpleNamespace(chat_template="", bos_token="", eos_token="")
    rows = [{"input": f"q{i}", "answer": "a"} for i in range(60)]
    opt = BaselineOptimizer(
        model, AnswerSpec(kind="label", labels=("a", "b")), rows, rows, BaselineConfig(method="opro")
    )
    slow = {"example_s": 0.5}
    assert opt._search_budget(slow) == 120 - 30 * 2 and slow["top_keep"] == 1
    fast = {"example_s": 0.05}
    assert opt._search_budget(fast) == 120 - 3 * 5 and fast["top_keep"] == 4
    assert opt._search_budget({}) == 120 and True
