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


def test_toolkit_never_imports_the_ui():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "toolkit"
    offenders = [
        p.name
        for p in root.rglob("*.py")
        if any(
            line.strip().startswith(("import textual", "from textual", "from tui", "import tui"))
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []
