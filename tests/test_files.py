"""Several writers of the same file at once (a TUI and a command, two scripts): no crash, no torn file, no
leftovers."""

import os
import subprocess
import sys
import threading

from toolkit.files import atomic_write_text, partial_path, remove_stale_partials


def test_concurrent_writers_of_one_file_never_fail_and_leave_a_whole_file(tmp_path):
    """With one fixed temporary name this failed at once (one writer's rename took the other's file away)."""
    target = tmp_path / "recent-projects.json"
    errors = []

    def write(k):
        try:
            for i in range(200):
                atomic_write_text(target, f"writer {k} round {i} " + "x" * 2000)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    text = target.read_text()
    assert text.startswith("writer ") and text.endswith("x" * 2000) and len(text.split(" round ")) == 2
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_opening_one_project_from_two_processes_at_once(tmp_path):
    """Each open rewrites the list of recent projects in the user directory: processes opening projects at the
    same time must all succeed (a command crashed this way beside a test polling the same project)."""
    from toolkit.project import init_project

    init_project(tmp_path / "proj", name="shared").close()
    code = (
        "import sys; from toolkit.project import open_project\nfor _ in range(40): open_project(sys.argv[1]).close()\n"
    )
    env = {**os.environ, "GRADPROMPT_HOME": str(tmp_path / "home")}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "proj")], env=env, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    assert not list((tmp_path / "home").glob("*.partial"))


def test_stale_partials_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "model-cache"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"model-cache.{dead_pid}-abcd1234.partial"
    stale.mkdir()
    (stale / "weights").write_text("half")
    legacy = tmp_path / "model-cache.partial"  # the fixed name of earlier versions
    legacy.write_text("old")
    live = partial_path(target)  # this process's: alive
    live.write_text("being written")
    other = tmp_path / "other.123-abcd.partial"
    other.write_text("not ours")
    remove_stale_partials(target)
    assert not stale.exists() and not legacy.exists()
    assert live.exists() and other.exists()
