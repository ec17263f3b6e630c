"""No network at run time: import, optimize (a tiny budget), eval and export work with every socket refused,
in-process (socket.connect patched to fail) and, where the OS allows it, in a process with no network at all
(`unshare -n`: a network namespace with only a down loopback)."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli import cli

GRADPROMPT = str(Path(sys.executable).with_name("gradprompt"))


def _csv(tmp_path):
    f = tmp_path / "yn.csv"
    f.write_text(
        "input,target\n"
        + "".join(
            f'"Review {i}: {"a wonderful, moving film" if i % 2 else "a dull, tiring mess"}",'
            f"{'positive' if i % 2 else 'negative'}\n"
            for i in range(20)
        )
    )
    return f


@pytest.fixture
def no_sockets(monkeypatch):
    tried = []

    def refuse(self, address, *args, **kwargs):
        tried.append(address)
        raise OSError(f"network access attempted in an offline test: {address!r}")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: refuse(None, a))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)  # gradprompt must be offline without the user setting these
    return tried


def test_import_optimize_eval_export_with_sockets_refused(project, tmp_path, real_tm, no_sockets):
    def run(*args):
        res = CliRunner().invoke(cli, ["--project", str(project.path), *args])
        assert res.exit_code == 0, res.output
        return res.output

    run("tasks", "import", str(_csv(tmp_path)))
    out = run(
        "optimize",
        "yn",
        "--steps",
        "1",
        "--train-size",
        "2",
        "--dev-size",
        "2",
        "--width",
        "2",
        "--probe",
        "0",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--initial-prompt",
        "Positive or negative?",
    )
    assert "Run 1" in out or "run 1" in out.lower()
    prompt_id = project.store.run(1)["best_prompt_id"]
    assert project.store.run(1)["status"] == "done" and prompt_id
    out = run("eval", str(prompt_id), "--limit", "3", "--json")
    assert json.loads(out.strip().splitlines()[-1])["n"] == 3
    run("export", str(prompt_id), "--format", "json", "-o", str(tmp_path / "p.json"))
    assert json.loads((tmp_path / "p.json").read_text())["prompt"]
    assert no_sockets == []  # nothing even tried


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare -n (root)")
def test_the_cli_in_a_process_without_a_network(tmp_path, real_tm):
    if subprocess.run(["unshare", "-n", "true"]).returncode != 0:
        pytest.skip("unshare -n is not permitted here")
    project = tmp_path / "proj"

    def run(*args):
        res = subprocess.run(
            ["unshare", "-n", GRADPROMPT, "--project", str(project), *args],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    assert (
        subprocess.run(
            [
                "unshare",
                "-n",
                sys.executable,
                "-c",
                "import socket; socket.create_connection(('127.0.0.1', 9), timeout=2)",
            ]
        ).returncode
        != 0
    )
    subprocess.run([GRADPROMPT, "init", str(project)], check=True, capture_output=True)
    assert "gradprompt" in run("--version")
    run("tasks", "import", str(_csv(tmp_path)))
    run("prompts", "add", "yn", "Positive or negative?")
    out = run("eval", "1", "--limit", "3", "--json")
    assert json.loads(out.strip().splitlines()[-1])["n"] == 3
    run("export", "1", "--format", "llamacpp", "-o", str(tmp_path / "bundle.json"))
    assert (tmp_path / "bundle.json").exists()
