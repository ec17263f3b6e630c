"""Issue 28's reproductions, replayed against one checkout: counts tracebacks and half-written results.

python benchmarks/issue28_repro.py CHECKOUT   (runs `toolkit.cli` from CHECKOUT with this interpreter; an
older commit: `git worktree add /tmp/old REV`, then `python benchmarks/issue28_repro.py /tmp/old`)"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKOUT = Path(sys.argv[1]).resolve()
PY = sys.executable
B = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bbh" / "boolean_expressions.csv"
RUNNER = (
    f"import sys; sys.path.insert(0, {str(CHECKOUT)!r}); from toolkit.cli import main; sys.argv[0]='gradprompt'; main()"
)


def gp(project, *args, stdin=None, home=None):
    env = {**os.environ, "GRADPROMPT_HOME": str(home)}
    args = [a.encode("utf-8", "surrogateescape") if isinstance(a, str) else a for a in args]
    r = subprocess.run([PY, "-c", RUNNER, "--project", str(project), *args], capture_output=True, env=env, timeout=300)
    return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")


def init(path, home):
    env = {**os.environ, "GRADPROMPT_HOME": str(home)}
    subprocess.run([PY, "-c", RUNNER, "init", str(path)], capture_output=True, env=env, timeout=120)


def fresh(root, home):
    """A new project holding BBH boolean_expressions as task ``b``."""
    p = root / f"p{len(list(root.iterdir()))}"
    init(p, home)
    gp(p, "tasks", "import", str(B), "--name", "b", home=home)
    return p


def main():
    root = Path(tempfile.mkdtemp(prefix="repro-"))
    home = root / "home"
    home.mkdir()
    results = []

    def check(name, project, *args, half=None):
        code, out = gp(project, *args, home=home)
        tb = "Traceback" in out or code not in (0, 1, 2)
        bad_write = bool(half and half(project))
        results.append({"case": name, "code": code, "traceback": tb, "half_written": bad_write})

    def prompts_vs_files(project):
        db = sqlite3.connect(project / ".gradprompt" / "history.db")
        n = db.execute("select count(*) from prompts").fetchone()[0]
        db.close()
        return n != len(list((project / "prompts").rglob("*.txt")))

    p = fresh(root, home)
    f = root / "files"
    f.mkdir()
    (f / "sur.jsonl").write_text('{"input":"x \\ud800","target":"a"}\n{"input":"y","target":"b"}\n')
    (f / "hdr.csv").write_text("h" * 140000 + ",target\nx,y\n")
    (f / "int.json").write_text('[{"input":"x","target":' + "9" * 5000 + "}]")
    for name, path in (
        ("surrogate JSONL", f / "sur.jsonl"),
        ("CSV header >128 KiB", f / "hdr.csv"),
        ("huge JSON int", f / "int.json"),
    ):
        check(name, p, "tasks", "import", str(path))
    check("--answer-regex '(x)?'", p, "tasks", "import", str(B), "--name", "r", "--answer-regex", "(x)?")
    check("--split 1e308 x3", p, "tasks", "import", str(B), "--name", "s", "--split", "1e308,1e308,1e308")
    check("invalid UTF-8 prompt", p, "prompts", "add", "b", "bad \udcff\udcfe", half=prompts_vs_files)
    check("invalid UTF-8 --note", p, "prompts", "add", "b", "ok", "--note", "\udcff", half=prompts_vs_files)
    check("--parent 2**63", p, "prompts", "add", "b", "x", "--parent", "9223372036854775808", half=prompts_vs_files)
    check("--parent -1", p, "prompts", "add", "b", "x2", "--parent", "-1", half=prompts_vs_files)
    check("export huge id", p, "export", "99999999999999999999999")
    check("eval --limit 2**63", p, "eval", "1", "--limit", "9223372036854775808")
    check(
        "optimize --train-size huge --dry-run",
        p,
        "optimize",
        "b",
        "--train-size",
        "99999999999999999999999",
        "--dry-run",
    )
    check("evals show huge", p, "evals", "show", "99999999999999999999999")
    check("runs show huge", p, "runs", "show", "99999999999999999999999")
    check("export -o long name", p, "export", "1", "-o", str(root / ("n" * 300)))
    (home / "models").mkdir(exist_ok=True)
    (home / "models" / "bad.toml").write_text('id = "bad"\ngguf = "x"\n')
    check("manifest wrong types: models list", p, "models", "list")
    check("manifest wrong types: models remove", p, "models", "remove", "bad")
    (home / "models" / "bad.toml").unlink(missing_ok=True)
    (root / "nested").mkdir()
    init(root / "nested", home)
    (root / "nested" / "gradprompt.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    check("deeply nested gradprompt.toml", root / "nested", "tasks", "list")
    q = fresh(root, home)
    shutil.rmtree(q / ".gradprompt")
    (q / ".gradprompt").write_text("x")
    check(".gradprompt is a file", q, "tasks", "list")
    d = fresh(root, home)
    db = sqlite3.connect(d / ".gradprompt" / "history.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with open(d / ".gradprompt" / "history.db", "r+b") as fh:
        fh.seek(4096 * 4)
        fh.write(b"\0" * 4096)
    for args in (
        ["tasks", "list"],
        ["prompts", "list"],
        ["runs", "list"],
        ["evals", "list"],
        ["prompts", "add", "b", "y"],
    ):
        check("damaged page: " + " ".join(args), d, *args)
    z = fresh(root, home)
    (z / ".gradprompt" / "history.db").write_bytes(b"")
    for side in ("-wal", "-shm"):
        (z / ".gradprompt" / f"history.db{side}").unlink(missing_ok=True)
    code, out = gp(z, "tasks", "list", home=home)
    results.append(
        {
            "case": "0-byte history taken as new",
            "code": code,
            "traceback": "Traceback" in out,
            "half_written": code == 0,
        }
    )
    t = fresh(root, home)
    check("eval --limit 0", t, "eval", "1", "--limit", "0")
    check("--max-new-tokens 0", t, "eval", "1", "--max-new-tokens", "0", "--limit", "1")
    code, out = gp(t, "prompts", "add", "b", "x", "--parent", "12345", home=home)
    db = sqlite3.connect(t / ".gradprompt" / "history.db")
    stored = db.execute("select count(*) from prompts where parent_id = 12345").fetchone()[0]
    results.append(
        {"case": "--parent 12345 stored", "code": code, "traceback": "Traceback" in out, "half_written": stored > 0}
    )
    tracebacks = sum(r["traceback"] for r in results)
    half = sum(r["half_written"] for r in results)
    for r in results:
        print(
            f"{r['case']:45s} exit {r['code']:3d} traceback {r['traceback']!s:5s} half-written/misleading {r['half_written']}"
        )
    print(
        json.dumps({"checkout": str(CHECKOUT), "cases": len(results), "tracebacks": tracebacks, "half_written": half})
    )


main()
