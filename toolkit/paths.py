"""Where gradprompt keeps user-level data (added models, converted weights, the default project)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "GRADPROMPT_HOME"


def user_dir() -> Path:
    """The user data directory: ``$GRADPROMPT_HOME`` or ``$XDG_DATA_HOME/gradprompt`` or ``~/.local/share/gradprompt``."""
    env = os.environ.get(ENV_HOME)
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        path = Path(base) / "gradprompt"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    path = user_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
