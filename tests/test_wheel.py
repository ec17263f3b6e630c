"""The wheel and the sdist carry the package data (model manifests, the demo task, the TUI), and the wheel
installed into a fresh virtualenv runs `gradprompt --version` and `models list`."""

import os
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_wheel_and_sdist_build_and_the_wheel_runs_in_a_fresh_venv(tmp_path):
    out = tmp_path / "dist"
    res = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    wheel = next(out.glob("gradprompt-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "toolkit/manifests/smollm2-135m.toml",
        "toolkit/manifests/gemma3-270m.toml",
        "tui/app.py",
        "toolkit/engine/greater.py",
    ):
        assert needed in names, needed
    assert any(n.startswith("toolkit/data/") and n.endswith(".csv") for n in names)
    with tarfile.open(next(out.glob("gradprompt-*.tar.gz"))) as sdist:
        members = sdist.getnames()
    assert any(m.endswith("models/smollm2-135m.toml") for m in members)
    assert any(m.endswith("toolkit/data/README.md") for m in members)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = next(venv.glob("lib/python*/site-packages"))
    # the wheel alone, unpacked into the new environment; its dependencies come from this test's environment
    # (PYTHONPATH, where no gradprompt lives: the checkout's own is an editable install, not on that path)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(site.getsitepackages()), "COLUMNS": "200"}
    py = str(venv / "bin" / "python")
    where = subprocess.run(
        [py, "-c", "import toolkit; print(toolkit.__file__)"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert str(target) in where.stdout, where.stdout + where.stderr  # the wheel's copy, not the checkout
    launcher = [py, "-c", "import sys; from toolkit.cli import main; sys.argv[0] = 'gradprompt'; main()"]
    res = subprocess.run([*launcher, "--version"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0 and "gradprompt, version" in res.stdout, res.stderr
    res = subprocess.run([*launcher, "models", "list"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0 and "smollm2-135m" in res.stdout and "gemma3-270m" in res.stdout, res.stderr
