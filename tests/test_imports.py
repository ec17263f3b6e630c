import subprocess
import sys

HEAVY = ("torch", "transformers", "llama_cpp", "textual", "bitsandbytes")


def test_import_toolkit_is_light():
    code = (
        "import sys, toolkit, toolkit.cli, toolkit.store, toolkit.tasks, toolkit.models, toolkit.project, "
        "toolkit.evaluate, toolkit.optimize, toolkit.export, toolkit.layout\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing toolkit pulled in: {out.stdout.strip()}"


def _contract(name_start: str) -> dict:
    import tomllib
    from pathlib import Path

    config = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c["name"].startswith(name_start))


def test_the_layer_contract_names_every_core_module():
    """The import-linter contract (run by `lint-imports` in .ci/run) lists the core's modules by name: a new module
    missing from it would be free to import a face, so every toolkit module but the command line must be there."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "toolkit"
    modules = {f"toolkit.{p.stem}" for p in root.glob("*.py") if p.stem != "__init__"}
    modules |= {f"toolkit.{p.parent.name}" for p in root.glob("*/__init__.py")}
    contract = _contract("Faces above the core")
    assert set(contract["source_modules"]) == modules - {"toolkit.cli"}
    assert {"toolkit.cli", "tui", "textual"} <= set(contract["forbidden_modules"])


def test_the_import_contracts_hold_and_catch_a_face_import(tmp_path):
    """`lint-imports` passes on the tree, and fails on a copy whose core imports the command line (the contract
    bites)."""
    import shutil
    from pathlib import Path

    lint = Path(sys.executable).with_name("lint-imports")
    root = Path(__file__).resolve().parents[1]
    ok = subprocess.run([str(lint)], cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root)})
    assert ok.returncode == 0, ok.stdout[-2000:]
    copy = tmp_path / "tree"
    for name in ("toolkit", "tui", "models"):
        shutil.copytree(root / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "pyproject.toml", copy)
    with (copy / "toolkit" / "plan.py").open("a") as fh:
        fh.write("\nfrom .cli import console  # noqa\n")
    bad = subprocess.run([str(lint)], cwd=copy, capture_output=True, text=True, env={"PYTHONPATH": str(copy)})
    assert bad.returncode != 0 and "toolkit.plan -> toolkit.cli" in bad.stdout
