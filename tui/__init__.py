"""gradprompt's Textual terminal UI, built on toolkit's public API."""
