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


def _imports(path):
    """Every module a file imports (absolute names; relative imports resolved against the toolkit package),
    at any depth (function-level imports included)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(path.parents[len(path.parts) - 1 - path.parts.index("toolkit")]).parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod
            yield from (f"{mod}.{a.name}" for a in node.names)


def test_the_core_never_imports_the_cli_or_the_ui():
    """The import contract (docs/architecture.md): the headless core (every toolkit module but the CLI itself)
    imports neither the command-line layer (toolkit.cli) nor the terminal UI (tui, textual); rendering the core
    shares with the CLI lives in toolkit.render."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "toolkit"
    assert any(m == "toolkit.render" for m in _imports(root / "demo.py"))  # the resolver sees relative imports
    offenders = {}
    for path in root.rglob("*.py"):
        if path.name == "cli.py" or "cli" in path.relative_to(root).parts[:-1]:
            continue
        bad = sorted(
            {m for m in _imports(path) if m == "toolkit.cli" or m.startswith(("toolkit.cli.", "tui", "textual"))}
        )
        if bad:
            offenders[str(path.relative_to(root))] = bad
    assert offenders == {}
