"""Domain errors: each has a short title and a message a user can act on."""

from __future__ import annotations


class GradpromptError(Exception):
    """Base class. ``title`` is a short headline; ``str(exc)`` says what is wrong and how to fix it."""

    title = "gradprompt error"

    def __init__(self, message: str, *, title: str | None = None):
        super().__init__(message)
        if title is not None:
            self.title = title


class DatasetError(GradpromptError):
    title = "Bad dataset"


class TaskNotFoundError(GradpromptError):
    title = "Task not found"


class ModelNotFoundError(GradpromptError):
    title = "Model not found"


class ModelFileError(GradpromptError):
    title = "Model file problem"


class InputTooLongError(ModelFileError):
    """One example does not fit the model's context: evaluation skips it (counted wrong) and goes on."""

    title = "Input too long"


class ProjectError(GradpromptError):
    title = "Project problem"


class PromptNotFoundError(GradpromptError):
    title = "Prompt not found"


class RunNotFoundError(GradpromptError):
    title = "Run not found"


class EvaluationNotFoundError(GradpromptError):
    title = "Evaluation not found"


class ClusterWorkError(GradpromptError):
    title = "Work on the cluster failed"


class ConfigError(GradpromptError):
    title = "Bad setting"


class OutOfMemoryError(GradpromptError):
    title = "Out of memory"


class MissingExtraError(GradpromptError):
    """A part of gradprompt that this install lacks (the edge install has no torch, say)."""

    def __init__(self, message: str):
        super().__init__(message, title="Not in this install")


EXTRAS = {  # module -> (extra, what it gives)
    "torch": ("torch", "the optimizer (GReaTer) and the torch runtime"),
    "transformers": ("torch", "the optimizer (GReaTer) and the torch runtime"),
    "safetensors": ("torch", "the optimizer (GReaTer) and the torch runtime"),
    "bitsandbytes": ("gpu", "8-bit and 4-bit torch models"),
    "textual": ("tui", "the terminal UI"),
    "matplotlib": ("bench", "the bench chart"),
}


def require(*modules: str, what: str) -> None:
    """Import ``modules`` or say clearly that ``what`` needs a part this install lacks and how to add it (never a
    raw ImportError)."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            extra, gives = EXTRAS.get(module, (module, module))
            import sys

            if getattr(sys, "frozen", False):  # the edge bundle: no pip to add a part with
                raise MissingExtraError(
                    f"{what} needs {module} ({gives}), which the edge bundle leaves out (it runs the prompt "
                    "library, tasks, llama.cpp evaluation, compare across GGUF files and export). Use the full "
                    "install for it: `bash packaging/setup.sh` in a gradprompt checkout."
                ) from None
            raise MissingExtraError(
                f"{what} needs {module} ({gives}), which this install does not have - the edge install runs the "
                f"prompt library, tasks, llama.cpp evaluation, compare across GGUF files and export without it. "
                f"Add it with `pip install 'gradprompt[{extra}]'`, or run `bash packaging/setup.sh` for the full "
                "install."
            ) from None
