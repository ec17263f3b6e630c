"""Entry point of the edge bundle (PyInstaller): the gradprompt CLI and TUI without torch."""

from toolkit.cli import main

if __name__ == "__main__":
    main()
