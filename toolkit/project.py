"""A project: a folder the user can keep under version control, plus its history.

    my-project/
      gradprompt.toml          settings (name, default model)
      prompts/<task>/NNNN.txt  the prompt library, one human-readable file per prompt version
      exports/                 exported prompts
      .gradprompt/history.db   the history (SQLite)

Commands work on the project in the current folder (or a parent), else on a default project in the user
data directory.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from .errors import ProjectError
from .models import DEFAULT_MODEL_ID
from .paths import user_dir
from .store import Store

SETTINGS_FILE = "gradprompt.toml"
ENV_PROJECT = "GRADPROMPT_PROJECT"


@dataclass
class Project:
    path: Path
    settings: dict
    store: Store
    id: int

    @property
    def name(self) -> str:
        return self.settings.get("name", self.path.name)

    @property
    def default_model(self) -> str:
        return self.settings.get("default_model", DEFAULT_MODEL_ID)

    @property
    def history_path(self) -> Path:
        return self.path / ".gradprompt" / "history.db"

    @property
    def exports_dir(self) -> Path:
        path = self.path / "exports"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_prompt(self, task_row: dict | None, text: str, **kwargs) -> int:
        """Store a prompt version and write it to the prompt library folder: both or neither. The file is written
        inside the row's write transaction: a failed file write rolls the row back, a failed commit (a full
        disk) removes the file."""
        written: list[Path] = []

        def write(prompt_id: int) -> None:
            written.append(self.write_prompt_file(prompt_id))

        try:
            return self.store.add_prompt(
                self.id, task_row["id"] if task_row else None, text, before_commit=write, **kwargs
            )
        except OSError as exc:
            raise ProjectError(
                f"Could not write the prompt library file under {self.path / 'prompts'} ({exc}); "
                "nothing was stored. Free some space or fix the folder, then try again."
            ) from None
        except BaseException:
            for path in written:  # the row was not committed: its file goes too
                path.unlink(missing_ok=True)
            raise

    def write_prompt_file(self, prompt_id: int) -> Path:
        row = self.store.prompt(prompt_id)
        task = "untitled"
        if row["task_id"] is not None:
            task = self.store.task_by_id(row["task_id"])["name"]
        # A task name becomes one folder name inside prompts/, never a path (no "..", no separators).
        safe = re.sub(r"[^\w .-]", "_", task).strip(" .") or "untitled"
        folder = self.path / "prompts" / safe
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{prompt_id:04d}.txt"
        header = [
            f"# prompt {prompt_id} | task {task} | origin {row['origin']}"
            + (f" | parent {row['parent_id']}" if row["parent_id"] else "")
            + (f" | run {row['run_id']} step {row['step']}" if row["run_id"] else ""),
            f"# created {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(row['created']))}",
        ]
        if row.get("demos"):
            from .layout import demo_lines

            header.append("# demonstrations (earlier chat turns, in order):")
            header += ["#   " + line for line in demo_lines(row["demos"])]
        if row.get("calibration"):
            from .calibration import Calibration

            cal = Calibration.from_json(row["calibration"])
            header.append(f"# label decision: {cal.describe() if cal else '-'}")
        _atomic_write(out, "\n".join(header) + "\n" + row["text"] + "\n")
        return out

    def close(self) -> None:
        self.store.close()


def _atomic_write(path: Path, text: str) -> None:
    from .files import atomic_write_text

    atomic_write_text(path, text)


def _recent_file() -> Path:
    return user_dir() / "recent-projects.json"


def recent_projects() -> list[dict]:
    """Projects opened before, newest first, that still exist: [{"path", "name", "opened"}]."""
    import json

    try:
        items = json.loads(_recent_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        items = []
    if not isinstance(items, list):  # a damaged list of recent projects must never lock anyone out
        items = []
    out = []
    for i in items:
        try:
            if isinstance(i, dict) and isinstance(i.get("path"), str) and (Path(i["path"]) / SETTINGS_FILE).is_file():
                out.append(i)
        except (OSError, ValueError):
            continue
    return out


def _remember(project: Project) -> None:
    import json

    items = [i for i in recent_projects() if i["path"] != str(project.path)]
    items.insert(0, {"path": str(project.path), "name": project.name, "opened": time.time()})
    try:
        _atomic_write(_recent_file(), json.dumps(items[:30], indent=1))
    except OSError:  # the list of recent projects is a convenience: it never stops a command
        pass


def init_project(path: str | Path, name: str | None = None, default_model: str | None = None) -> Project:
    path = Path(path).expanduser().resolve()
    settings_path = path / SETTINGS_FILE
    if settings_path.exists():
        raise ProjectError(f"{path} is already a gradprompt project ({SETTINGS_FILE} exists).")
    path.mkdir(parents=True, exist_ok=True)
    name = name or path.name
    if not re.match(r"^[\w .-]{1,64}$", name):
        raise ProjectError(f"Project name {name!r}: use up to 64 letters, digits, spaces, '_', '-' or '.'.")
    settings = {"name": name, "default_model": default_model or DEFAULT_MODEL_ID, "created": time.strftime("%Y-%m-%d")}
    _atomic_write(settings_path, tomli_w.dumps(settings))
    (path / ".gradprompt").mkdir(exist_ok=True)
    _atomic_write(
        path / ".gradprompt" / ".gitignore", "# the history database; back it up with `gradprompt history backup`\n*\n"
    )
    return open_project(path)


def find_project_dir(start: str | Path | None = None) -> Path | None:
    current = Path(start or Path.cwd()).resolve()
    for folder in (current, *current.parents):
        if (folder / SETTINGS_FILE).is_file():
            return folder
    return None


def default_project_dir() -> Path:
    return user_dir() / "default-project"


def open_project(path: str | Path | None = None) -> Project:
    """Open the project at ``path``, or the one containing the current folder, or the default one."""
    if path is None and os.environ.get(ENV_PROJECT):
        path = os.environ[ENV_PROJECT]
    if path is None:
        path = find_project_dir()
    if path is None:
        path = default_project_dir()
        if not (path / SETTINGS_FILE).exists():
            return init_project(path, name="default")
    path = Path(path).expanduser().resolve()
    settings_path = path / SETTINGS_FILE
    if not settings_path.is_file():
        raise ProjectError(
            f"{path} is not a gradprompt project (no {SETTINGS_FILE}). Create one with `gradprompt init {path}`."
        )
    try:
        settings = tomllib.loads(settings_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(
            f"{settings_path}: not valid TOML ({exc}). Fix the file or re-create it with "
            "`gradprompt init` in another folder."
        ) from None
    except RecursionError:
        raise ProjectError(
            f"{settings_path}: nested too deeply to be gradprompt's settings. Fix the file or re-create it with "
            "`gradprompt init` in another folder."
        ) from None
    except UnicodeDecodeError as exc:
        raise ProjectError(
            f"{settings_path}: not a text file (byte {exc.start} is not UTF-8). Fix the file or "
            "re-create it with `gradprompt init` in another folder."
        ) from None
    if not isinstance(settings.get("name", ""), str) or not isinstance(settings.get("default_model", ""), str):
        raise ProjectError(f"{settings_path}: 'name' and 'default_model' must be strings.")
    history = path / ".gradprompt" / "history.db"
    if history.parent.exists() and not history.parent.is_dir():
        raise ProjectError(
            f"{history.parent} is a file, where the project keeps its history folder. Move it away (it is not "
            "gradprompt's), then run the command again: the project then starts a new, empty history.",
            title="History database problem",
        )
    if history.is_file() and history.stat().st_size == 0 and not history.with_name("history.db-wal").exists():
        raise ProjectError(
            f"{history} is empty (0 bytes): the history it held is gone, or the file was truncated. If you have a "
            "copy made with `gradprompt history backup`, put it in its place; to start a new, empty history, "
            "delete the empty file.",
            title="History database problem",
        )
    try:
        store = Store(history)
        store.quick_check()
        project_id = store.ensure_project(settings.get("name", path.name), str(path))
    except (sqlite3.DatabaseError, OSError) as exc:
        raise ProjectError(history_problem(history, exc), title="History database problem") from None
    project = Project(path=path, settings=settings, store=store, id=project_id)
    _remember(project)
    return project


def history_problem(history: Path, exc: BaseException) -> str:
    """What went wrong opening a history, told apart by cause, each with the way out that keeps the data."""
    from .store import DamagedHistoryError

    text = str(exc)
    low = text.lower()
    if "full" in low or getattr(exc, "errno", None) == errno.ENOSPC:
        return (
            f"The disk that holds {history} is full ({text}): the history could not be opened for writing. "
            "Nothing was changed and nothing is lost. Free some space, then run the command again."
        )
    if "readonly" in low or "read-only" in low or "unable to open" in low or isinstance(exc, PermissionError):
        return (
            f"{history} cannot be written ({text}): the project folder, or the file, is read-only (or not "
            "yours). Nothing was changed and nothing is lost. Make the folder and the file writable (a history "
            "is written to even when reading: it keeps a journal beside it), then run the command again."
        )
    if isinstance(exc, DamagedHistoryError) or "malformed" in low or "corrupt" in low:
        return (
            f"{history} is damaged ({text}). gradprompt will not write to it. Keep the file, and copy it with "
            "what it holds: `sqlite3 history.db .recover | sqlite3 recovered.db` (the sqlite3 program, run in "
            f"{history.parent}) rescues what is readable; put recovered.db in place of history.db. A copy made "
            "earlier with `gradprompt history backup` can also take its place."
        )
    return (
        f"{history} is not a gradprompt history ({text}). Nothing was changed. If you have a copy made with "
        "`gradprompt history backup`, put it in its place; if the file is not yours to keep, move it away and the "
        "project starts a new, empty history."
    )
