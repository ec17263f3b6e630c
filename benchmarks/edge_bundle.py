"""The edge bundle against the full install: size, cold start (`--version`, the TUI's first screen) and
llama.cpp evaluation speed on the same examples. Prints a table and, last, one line of JSON.

    bash packaging/build_edge.sh && python benchmarks/edge_bundle.py [--examples 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "dist" / "gradprompt-edge" / "gradprompt"
FULL = ROOT / ".venv" / "bin" / "gradprompt"


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(cmd, **kw) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, **kw)
    return time.perf_counter() - t


def tui_first_screen(exe: Path, project: Path, env: dict) -> float:
    session = f"gp-bench-{time.time_ns()}"
    t = time.perf_counter()
    subprocess.run(
        [
            "tmux",
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "100",
            "-y",
            "30",
            "-c",
            str(project),
            f"env GRADPROMPT_HOME={env['GRADPROMPT_HOME']} {exe} tui",
        ],
        check=True,
    )
    try:
        while time.perf_counter() - t < 120:
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            if "reviews" in screen:
                return time.perf_counter() - t
            time.sleep(0.05)
        raise RuntimeError("the TUI did not show its first screen in 120 s")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not BUNDLE.is_file():
        sys.exit("No bundle: run `bash packaging/build_edge.sh` first.")
    work = Path(tempfile.mkdtemp(prefix="gp-edge-bench-"))
    env = {"PATH": "/usr/bin:/bin", "GRADPROMPT_HOME": str(work / "home"), "COLUMNS": "200"}
    data = work / "reviews.csv"
    n = max(args.examples * 3, 30)  # test is 40% of the rows
    data.write_text(
        "goal,target\n"
        + "".join(
            f"The film was {'wonderful and moving' if i % 2 else 'dull and far too long'} in scene {i}.,"
            f"{'positive' if i % 2 else 'negative'}\n"
            for i in range(n)
        )
    )
    rows = {}
    for name, exe in (("bundle", BUNDLE), ("full install", FULL)):
        version = [timed([str(exe), "--version"], env=env) for _ in range(args.repeat)]
        speeds, tui = [], []
        for r in range(args.repeat):
            proj = work / f"{name.replace(' ', '-')}-{r}"
            subprocess.run([str(exe), "init", str(proj)], check=True, capture_output=True, env=env)
            subprocess.run([str(exe), "tasks", "import", str(data)], check=True, capture_output=True, env=env, cwd=proj)
            subprocess.run(
                [str(exe), "prompts", "add", "reviews", "Is this review positive or negative?"],
                check=True,
                capture_output=True,
                env=env,
                cwd=proj,
            )
            out = subprocess.run(
                [str(exe), "eval", "1", "--limit", str(args.examples), "--json"],
                check=True,
                capture_output=True,
                text=True,
                env=env,
                cwd=proj,
            ).stdout
            report = json.loads(out.strip().splitlines()[-1])
            speeds.append(report["n"] / report["seconds"])
            if shutil.which("tmux"):
                tui.append(tui_first_screen(exe, proj, env))
        size = du(BUNDLE.parent) if name == "bundle" else None
        rows[name] = {
            "size_mb": None if size is None else round(size / 2**20, 1),
            "version_s": [round(v, 2) for v in version],
            "tui_first_screen_s": [round(v, 2) for v in tui],
            "eval_examples_per_s": [round(v, 2) for v in speeds],
        }
    gguf = next((BUNDLE.parent / "lib").rglob("*.gguf"), None)
    print(f"{'':14} {'size':>9} {'--version s (median)':>21} {'TUI first screen s':>19} {'eval ex/s':>10}")
    for name, r in rows.items():
        size = f"{r['size_mb']:.0f} MB" if r["size_mb"] else "-"
        tui = f"{statistics.median(r['tui_first_screen_s']):.2f}" if r["tui_first_screen_s"] else "-"
        print(
            f"{name:14} {size:>9} {statistics.median(r['version_s']):>21.2f} {tui:>19} "
            f"{statistics.median(r['eval_examples_per_s']):>10.2f}"
        )
    ratio = statistics.median(rows["bundle"]["eval_examples_per_s"]) / statistics.median(
        rows["full install"]["eval_examples_per_s"]
    )
    print(
        f"bundle eval speed / full install: {ratio:.2f}; the GGUF inside: "
        f"{(gguf.stat().st_size / 2**20 if gguf else 0):.0f} MB"
    )
    print(
        json.dumps(
            {
                "rows": rows,
                "eval_speed_ratio": round(ratio, 3),
                "gguf_mb": round(gguf.stat().st_size / 2**20, 1) if gguf else None,
            }
        )
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
