"""Which process owns a running run or evaluation, and whether that process is still alive.

A run marked ``running`` whose process was killed (``kill -9``, a closed laptop lid that never woke, an out-of-
memory kill) would otherwise look alive forever. Each running row records its owner: the host name, the pid and
the process's start time (so a recycled pid is not mistaken for the owner). A row whose owner is gone is shown
as ``interrupted``; ``gradprompt runs resume`` continues it, and refuses a run whose owner is still alive.
"""

from __future__ import annotations

import json
import os
import platform

INTERRUPTED = "interrupted"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or None where it is unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of the whole line


def me() -> str:
    """This process as an owner record (JSON text, stored in the row's ``owner`` column)."""
    pid = os.getpid()
    return json.dumps({"host": platform.node(), "pid": pid, "start": _start_time(pid)})


def alive(owner: str | None) -> bool | None:
    """True: the owning process is running; False: it is gone; None: unknown (another host, or no record)."""
    if not owner:
        return None
    try:
        rec = json.loads(owner)
        pid = int(rec["pid"])
    except (ValueError, KeyError, TypeError):
        return None
    if rec.get("host") != platform.node():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    except OSError:
        return None
    start = _start_time(pid)
    if rec.get("start") is not None and start is not None and start != rec["start"]:
        return False  # the pid was reused by another process
    return True


def pid_of(owner: str | None) -> int | None:
    try:
        return int(json.loads(owner)["pid"]) if owner else None
    except (ValueError, KeyError, TypeError):
        return None


def effective_status(row: dict) -> str:
    """A row's status as a user should see it: ``running`` whose owner is gone reads ``interrupted``."""
    status = row.get("status")
    if status == "running" and alive(row.get("owner")) is False:
        return INTERRUPTED
    return str(status)
