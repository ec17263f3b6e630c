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


class ConfigError(GradpromptError):
    title = "Bad setting"


class OutOfMemoryError(GradpromptError):
    title = "Out of memory"
