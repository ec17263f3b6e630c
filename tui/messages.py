"""What the TUI calls for heavy work (Backends) and the messages its workers post to the App."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual.message import Message


def _load_llama(model_id: str):
    from toolkit.evaluation import load_model

    return load_model("llamacpp", model_id)


@dataclass
class Backends:
    """What the UI calls for heavy work. ``load_torch_model(model_id, precision)`` returns a loaded torch model;
    ``load_llama_model(model_id)`` a loaded llama.cpp model (for evaluations)."""

    load_torch_model: Callable[[str, str], object]
    load_llama_model: Callable[[str], object] = _load_llama


def default_backends() -> Backends:
    def load(model_id: str, precision: str = "auto"):
        from toolkit.evaluation import load_model

        return load_model("torch", model_id, precision=precision)

    return Backends(load_torch_model=load)


# ---------------------------------------------------------------------------------------------- messages


class StepArrived(Message):
    def __init__(self, run_id: int | None, record: dict) -> None:
        self.run_id, self.record = run_id, record
        super().__init__()


class RunFinished(Message):
    def __init__(self, result) -> None:
        self.result = result
        super().__init__()


class JobFailed(Message):
    def __init__(self, title: str, text: str) -> None:
        self.title, self.text = title, text
        super().__init__()
