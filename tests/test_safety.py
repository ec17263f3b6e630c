"""Safe by construction: nothing a file contains is executed. Chat templates render in Jinja's sandbox; the
code never unpickles, never runs model code from a folder, never opens a network connection by itself."""

import ast
from pathlib import Path

import pytest

from toolkit.layout import ChatLayout

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{% set x = [].append(1) %}{{ messages[0]['content'] }}",
    ],
)
def test_a_hostile_chat_template_cannot_reach_python(template):
    """The sandbox holds, and what it refuses is gradprompt's message (issue 28: SecurityError surfaced raw)."""
    from toolkit.errors import ModelFileError

    with pytest.raises(ModelFileError, match="chat template"):
        ChatLayout(template).split("hello")


@pytest.mark.parametrize(
    "template", ["{% for m in messages %}", "{{ raise_exception('no system role') }}", "{{ 1/0 }}"]
)
def test_a_broken_chat_template_is_a_message_not_a_traceback(template):
    from toolkit.errors import ModelFileError

    with pytest.raises(ModelFileError, match="chat template cannot be rendered"):
        ChatLayout(template).split("hello")


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_the_code_never_unpickles_runs_model_code_or_opens_the_network():
    bad = []
    for path in sorted((ROOT / "toolkit").rglob("*.py")) + sorted((ROOT / "tui").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                bad += [
                    f"{path.name}: imports {n}"
                    for n in names
                    if n and n.split(".")[0] in ("pickle", "dill", "requests", "urllib3", "httpx", "socket")
                ]
        for call in _calls(tree):
            fn = ast.unparse(call.func)
            if fn in ("torch.load", "eval", "exec", "pickle.load", "pickle.loads") or fn.endswith("urlopen"):
                bad.append(f"{path.name}:{call.lineno}: {fn}()")
            for kw in call.keywords:
                if kw.arg == "trust_remote_code" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    bad.append(f"{path.name}:{call.lineno}: trust_remote_code={ast.unparse(kw.value)}")
                if kw.arg == "use_safetensors" and not (isinstance(kw.value, ast.Constant) and kw.value.value is True):
                    bad.append(f"{path.name}:{call.lineno}: use_safetensors={ast.unparse(kw.value)}")
    assert bad == []


def test_torch_loading_asks_for_safetensors_only():
    src = (ROOT / "toolkit" / "engine" / "torch_backend.py").read_text()
    assert '"use_safetensors": True' in src and '"trust_remote_code": False' in src
