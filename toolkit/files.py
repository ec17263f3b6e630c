"""Files written whole or not at all, safe when several gradprompt processes (a TUI, a script, two commands) write
the same file at once.

Every writer puts its bytes under a temporary name of its own beside the target and renames it over the target
(atomic on one filesystem). The temporary name must be unique to the writer: with one fixed name, two writers
share it - one's rename moves the other's half-written file into place, and the other's rename then fails (a
command that only opened a project crashed this way while another process opened it too).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

SUFFIX = ".partial"


def partial_path(path: Path) -> Path:
    """A temporary name beside ``path`` for one writer: ``NAME.PID-RANDOM.partial``."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (UTF-8)."""
    tmp = partial_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        try:  # the write's own error is what matters (a read-only file system fails here too)
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_partials(path: Path) -> None:
    """Remove the temporary files or folders of ``path`` left by writers that died (a crash, a kill) - a converted
    model is ~0.5 GB - and keep those of writers still running."""
    legacy = path.with_name(path.name + SUFFIX)  # the one fixed name of earlier versions
    for entry in [*path.parent.glob(f"{path.name}.*{SUFFIX}"), *([legacy] if legacy.exists() else [])]:
        pid_part = entry.name[len(path.name) + 1 : -len(SUFFIX)].split("-", 1)[0]
        if pid_part.isdigit() and _pid_alive(int(pid_part)):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
