"""Models already on this machine: Ollama's store, LM Studio's folders, the Hugging Face hub cache, any folder.

Read-only and offline: manifests, configs and GGUF headers are read; nothing is copied, downloaded or hashed
(a multi-gigabyte file is hashed once, when it is added). Each tool's own locations and environment variables
are followed:

* Ollama: ``$OLLAMA_MODELS``, else ``~/.ollama/models`` and the Linux service's ``/usr/share/ollama/.ollama/models``;
  ``manifests/<host>/<namespace>/<model>/<tag>`` (JSON, the Docker v2 shape) naming ``blobs/sha256-<hex>``; the
  layer of media type ``application/vnd.ollama.image.model`` is the GGUF. Shown as Ollama shows it:
  ``llama3.2:1b``, ``user/model:tag``, ``hf.co/owner/repo:tag``.
* LM Studio: ``downloadsFolder`` in ``<home>/settings.json``, else ``<home>/models``, where home is the folder
  named in ``~/.lmstudio-home-pointer``, ``~/.lmstudio``, or the older ``~/.cache/lm-studio``; laid out
  ``<publisher>/<repo>/<file>.gguf``.
* Hugging Face: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
  ``~/.cache/huggingface/hub``; ``models--<owner>--<name>/snapshots/<commit>/`` (the commit ``refs/main``
  names first): a config with safetensors weights is a model folder, and each GGUF there is a model file.

A found model's reference (``ollama:llama3.2:1b``, ``lmstudio:owner/repo/file.gguf``, ``hf:owner/name``,
``hf:owner/name/file.gguf``, or a path) is what ``gradprompt models add`` takes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError, ModelFileError

# Architectures (a GGUF's general.architecture, a config's model_type) and the family each belongs to. These
# are the families gradprompt is tested on in both runtimes (tests/test_families.py); anything else is refused
# when it is added, naming these.
FAMILIES = {
    "llama": "Llama 3.x, SmolLM2 (and Mistral 7B GGUFs, which llama.cpp writes as llama)",
    "mistral": "Mistral",
    "qwen2": "Qwen 2.5",
    "qwen3": "Qwen 3",
    "gemma2": "Gemma 2",
    "gemma3": "Gemma 3",
    "gemma3_text": "Gemma 3",
    "phi3": "Phi-3, Phi-4-mini",
}
SOURCES = ("ollama", "lmstudio", "hf")
_OLLAMA_MODEL = "application/vnd.ollama.image.model"
_DEFAULT_HOST = "registry.ollama.ai"


def supported_families() -> str:
    return ", ".join(dict.fromkeys(v.split(" (")[0] for v in FAMILIES.values()))


def check_architecture(arch: str, where: str) -> None:
    """Refuse an architecture gradprompt has not been made to work with, naming the families that do."""
    if arch and arch not in FAMILIES:
        raise ModelFileError(
            f"{where}: architecture {arch!r} is not one gradprompt supports. Supported families: "
            f"{supported_families()}.",
            title="Architecture not supported",
        )


@dataclass(frozen=True)
class Found:
    """One model found on the machine."""

    ref: str  # what `gradprompt models add` takes
    source: str  # ollama | lmstudio | hf | folder
    kind: str  # gguf | hf (a Hugging Face folder: config and safetensors)
    path: str  # the GGUF file, or the folder
    architecture: str = ""
    size_bytes: int = 0
    quantization: str = ""
    instruct: bool | None = None  # a chat template is present (None: cannot tell)
    sha256: str = ""  # known without reading the file (Ollama's and the hub's blob names)
    problem: str = ""  # why it cannot be used as it is ("" when it can)

    @property
    def supported(self) -> bool:
        return not self.problem and self.architecture in FAMILIES

    def to_dict(self) -> dict:
        return {**asdict(self), "supported": self.supported}


# ---------------------------------------------------------------------------------------------- where


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def ollama_dirs() -> list[Path]:
    env = os.environ.get("OLLAMA_MODELS")
    if env:
        return [Path(env).expanduser()]
    return _existing([_home() / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")])


def lmstudio_dirs() -> list[Path]:
    homes = []
    pointer = _home() / ".lmstudio-home-pointer"
    try:
        pointed = pointer.read_text(encoding="utf-8").strip()
        if pointed:
            homes.append(Path(pointed).expanduser())
    except (OSError, UnicodeDecodeError):
        pass
    homes += [_home() / ".lmstudio", _home() / ".cache" / "lm-studio"]
    dirs = []
    for home in homes:
        try:
            folder = json.loads((home / "settings.json").read_text(encoding="utf-8")).get("downloadsFolder")
            if isinstance(folder, str) and folder:
                dirs.append(Path(folder).expanduser())
        except (OSError, ValueError, AttributeError):
            pass
        dirs.append(home / "models")
    return _existing(dirs)


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub"
    return _home() / ".cache" / "huggingface" / "hub"


def _existing(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        try:
            real = path.resolve()
        except OSError:
            continue
        if real.is_dir() and real not in out:
            out.append(real)
    return out


# ---------------------------------------------------------------------------------------------- what a file is


def gguf_facts(path: Path) -> dict:
    """Architecture, quantization and whether a chat template is present, from a GGUF's header alone; a file
    that is not a complete GGUF gives ``problem``."""
    facts: dict = {"architecture": "", "quantization": "", "instruct": None, "problem": ""}
    try:
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                facts["problem"] = "not a GGUF file"
                return facts
        import gguf as gguf_py

        reader = gguf_py.GGUFReader(str(path))
        fields = reader.fields
    except Exception as exc:  # the reader raises many kinds on a damaged file
        facts["problem"] = f"not a complete GGUF file ({type(exc).__name__})"
        return facts

    def value(key):
        field = fields.get(key)
        try:
            return field.contents() if field is not None else None
        except Exception:
            return None

    facts["architecture"] = str(value("general.architecture") or "")
    facts["instruct"] = bool(value("tokenizer.chat_template"))
    ftype = value("general.file_type")
    if isinstance(ftype, int):
        try:
            facts["quantization"] = gguf_py.LlamaFileType(ftype).name.removeprefix("MOSTLY_")
        except ValueError:
            facts["quantization"] = str(ftype)
    return facts


def hf_folder_facts(folder: Path) -> dict:
    """Architecture, dtype (or quantization method) and chat template of a Hugging Face model folder."""
    facts: dict = {"architecture": "", "quantization": "", "instruct": None, "problem": ""}
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not an object")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        facts["problem"] = f"config.json cannot be read ({exc.__class__.__name__})"
        return facts
    facts["architecture"] = str(config.get("model_type") or "")
    quant = config.get("quantization_config")
    facts["quantization"] = str(
        (quant.get("quant_method") if isinstance(quant, dict) else "") or config.get("torch_dtype") or ""
    )
    template = (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file()
    try:
        tok = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        template = template or bool(isinstance(tok, dict) and tok.get("chat_template"))
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    facts["instruct"] = template
    if not list(folder.glob("*.safetensors")):
        facts["problem"] = "no safetensors weights"
    return facts


def _size(paths) -> int:
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


def _gguf_found(ref: str, source: str, path: Path, sha256: str = "") -> Found:
    facts = gguf_facts(path)
    return Found(ref=ref, source=source, kind="gguf", path=str(path), size_bytes=_size([path]), sha256=sha256, **facts)


def _hf_found(ref: str, source: str, folder: Path) -> Found:
    facts = hf_folder_facts(folder)
    return Found(
        ref=ref, source=source, kind="hf", path=str(folder), size_bytes=_size(folder.glob("*.safetensors")), **facts
    )


# ---------------------------------------------------------------------------------------------- Ollama


def _ollama_name(host: str, namespace: str, model: str, tag: str) -> str:
    if host == _DEFAULT_HOST:
        return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
    return f"{host}/{namespace}/{model}:{tag}"


def _ollama_manifest_path(root: Path, name: str) -> Path:
    """``llama3.2:1b`` -> manifests/registry.ollama.ai/library/llama3.2/1b (Ollama's own name rules)."""
    base, _, tag = name.partition(":")
    if "/" in tag:  # a name like host:port/... is not one Ollama's store holds
        raise ConfigError(f"ollama:{name}: not an Ollama model name (MODEL[:TAG], e.g. ollama:llama3.2:1b).")
    parts = [p for p in base.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or len(parts) > 3:
        raise ConfigError(f"ollama:{name}: not an Ollama model name (MODEL[:TAG], e.g. ollama:llama3.2:1b).")
    if len(parts) == 1:
        parts = [_DEFAULT_HOST, "library", *parts]
    elif len(parts) == 2:
        parts = [_DEFAULT_HOST, *parts]
    return root / "manifests" / Path(*parts) / (tag or "latest")


def _ollama_blob(root: Path, manifest: Path) -> tuple[Path, str]:
    """The GGUF blob a manifest names, and its sha256 (the blob's name)."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        layers = data["layers"]
        digest = next(layer["digest"] for layer in layers if layer.get("mediaType") == _OLLAMA_MODEL)
    except StopIteration:
        raise ModelFileError(
            f"{manifest}: this Ollama model has no GGUF layer (newer Ollama models can be stored as tensors); "
            "gradprompt reads GGUF models only."
        ) from None
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{manifest}: not an Ollama manifest gradprompt can read ({exc}).") from None
    algo, _, hexdigest = str(digest).partition(":")
    if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
        raise ModelFileError(f"{manifest}: layer digest {digest!r} is not a sha256.")
    blob = root / "blobs" / f"sha256-{hexdigest}"
    if not blob.exists() and (root / "blobs" / f"sha256:{hexdigest}").exists():  # older Ollama
        blob = root / "blobs" / f"sha256:{hexdigest}"
    return blob, hexdigest


def find_ollama() -> list[Found]:
    out: list[Found] = []
    for root in ollama_dirs():
        manifests = root / "manifests"
        if not manifests.is_dir():
            continue
        for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()):
            rel = manifest.relative_to(manifests).parts
            if len(rel) != 4:
                continue
            name = _ollama_name(*rel)
            try:
                blob, digest = _ollama_blob(root, manifest)
            except ModelFileError as exc:
                out.append(
                    Found(ref=f"ollama:{name}", source="ollama", kind="gguf", path=str(manifest), problem=str(exc))
                )
                continue
            if not blob.is_file():
                out.append(
                    Found(ref=f"ollama:{name}", source="ollama", kind="gguf", path=str(blob), problem="blob missing")
                )
                continue
            out.append(_gguf_found(f"ollama:{name}", "ollama", blob, digest))
    return out


def resolve_ollama(name: str) -> Found:
    roots = ollama_dirs()
    for root in roots:
        manifest = _ollama_manifest_path(root, name)
        if manifest.is_file():
            blob, digest = _ollama_blob(root, manifest)
            if not blob.is_file():
                raise ModelFileError(
                    f"ollama:{name}: its manifest names {blob.name}, which is not in {blob.parent} (a pull that did "
                    f"not finish?). Run `ollama pull {name}` again."
                )
            return _gguf_found(f"ollama:{name}", "ollama", blob, digest)
    where = ", ".join(str(r) for r in roots) or "~/.ollama/models (absent); set OLLAMA_MODELS if it is elsewhere"
    raise ModelFileError(
        f"ollama:{name}: no such model in Ollama's store ({where}). `gradprompt models find` lists what is there.",
        title="Model not found",
    )


# ---------------------------------------------------------------------------------------------- LM Studio


def find_lmstudio() -> list[Found]:
    out: list[Found] = []
    for root in lmstudio_dirs():
        for path in sorted(root.glob("*/*/*.gguf")):
            if path.name.startswith("mmproj"):  # a vision projector, not a language model
                continue
            ref = "lmstudio:" + "/".join(path.relative_to(root).parts)
            out.append(_gguf_found(ref, "lmstudio", path))
    return out


def resolve_lmstudio(rel: str) -> Found:
    parts = [p for p in rel.split("/") if p]
    if len(parts) != 3 or any(p in (".", "..") for p in parts) or not parts[-1].endswith(".gguf"):
        raise ConfigError(f"lmstudio:{rel}: give PUBLISHER/REPO/FILE.gguf, as `gradprompt models find` shows it.")
    roots = lmstudio_dirs()
    for root in roots:
        path = root.joinpath(*parts)
        if path.is_file():
            return _gguf_found(f"lmstudio:{rel}", "lmstudio", path)
    where = ", ".join(str(r) for r in roots) or "no LM Studio models folder here"
    raise ModelFileError(
        f"lmstudio:{rel}: no such file in LM Studio's models folders ({where}). `gradprompt models find` lists "
        "what is there.",
        title="Model not found",
    )


# ---------------------------------------------------------------------------------------------- Hugging Face cache


def _snapshot(repo_dir: Path) -> Path | None:
    """The snapshot refs/main names, else the newest one."""
    snapshots = repo_dir / "snapshots"
    try:
        commit = (repo_dir / "refs" / "main").read_text(encoding="utf-8").strip()
        if commit and (snapshots / commit).is_dir():
            return snapshots / commit
    except (OSError, UnicodeDecodeError):
        pass
    found = [p for p in snapshots.iterdir() if p.is_dir()] if snapshots.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _blob_sha256(path: Path) -> str:
    """The hub cache names a large file's blob by its sha256: read it from the link, not from the file."""
    try:
        name = path.resolve().name
    except OSError:
        return ""
    return name if re.fullmatch(r"[0-9a-f]{64}", name) else ""


def find_hf_cache() -> list[Found]:
    out: list[Found] = []
    root = hf_cache_dir()
    if not root.is_dir():
        return out
    for repo_dir in sorted(root.glob("models--*")):
        repo = repo_dir.name.removeprefix("models--").replace("--", "/")
        snap = _snapshot(repo_dir)
        if snap is None:
            continue
        if (snap / "config.json").is_file():
            out.append(_hf_found(f"hf:{repo}", "hf", snap))
        for path in sorted(snap.rglob("*.gguf")):
            if path.name.startswith("mmproj"):
                continue
            rel = "/".join(path.relative_to(snap).parts)
            out.append(_gguf_found(f"hf:{repo}/{rel}", "hf", path, _blob_sha256(path)))
    return out


def resolve_hf(rel: str) -> Found:
    parts = [p for p in rel.split("/") if p]
    if len(parts) < 2 or any(p in (".", "..") for p in parts):
        raise ConfigError(f"hf:{rel}: give OWNER/NAME or OWNER/NAME/FILE.gguf, as `gradprompt models find` shows it.")
    root = hf_cache_dir()
    repo_dir = root / f"models--{parts[0]}--{parts[1]}"
    snap = _snapshot(repo_dir) if repo_dir.is_dir() else None
    if snap is None:
        raise ModelFileError(
            f"hf:{rel}: {parts[0]}/{parts[1]} is not in the Hugging Face cache ({root}; set HF_HUB_CACHE or HF_HOME "
            "if it is elsewhere). `gradprompt models find` lists what is there.",
            title="Model not found",
        )
    if len(parts) == 2:
        if not (snap / "config.json").is_file():
            ggufs = sorted("/".join(p.relative_to(snap).parts) for p in snap.rglob("*.gguf"))
            hint = f" It holds GGUF files: use hf:{parts[0]}/{parts[1]}/{ggufs[0]}" if ggufs else ""
            raise ModelFileError(f"hf:{rel}: the cached snapshot {snap} has no config.json.{hint}")
        return _hf_found(f"hf:{rel}", "hf", snap)
    path = snap.joinpath(*parts[2:])
    if not path.is_file():
        raise ModelFileError(f"hf:{rel}: no such file in the cached snapshot {snap}.", title="Model not found")
    return _gguf_found(f"hf:{rel}", "hf", path, _blob_sha256(path))


# ---------------------------------------------------------------------------------------------- any folder


def find_in_folder(folder: Path) -> list[Found]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder.")
    out: list[Found] = []
    for config in sorted(folder.rglob("config.json")):
        if any(config.parent.glob("*.safetensors")):
            out.append(_hf_found(str(config.parent.resolve()), "folder", config.parent.resolve()))
    for path in sorted(folder.rglob("*.gguf")):
        if not path.name.startswith("mmproj") and path.is_file():
            out.append(_gguf_found(str(path.resolve()), "folder", path.resolve()))
    return out


# ---------------------------------------------------------------------------------------------- together


def find_models(folders=(), sources=SOURCES) -> list[Found]:
    """Everything found, source by source (the folders given last)."""
    out: list[Found] = []
    if "ollama" in sources:
        out += find_ollama()
    if "lmstudio" in sources:
        out += find_lmstudio()
    if "hf" in sources:
        out += find_hf_cache()
    for folder in folders:
        out += find_in_folder(Path(folder))
    return out


def is_reference(text: str) -> bool:
    return text.split(":", 1)[0] in SOURCES and ":" in text


def resolve(ref: str) -> Found:
    """What a reference names now (a ModelFileError says clearly when it is not there)."""
    kind, _, rest = ref.partition(":")
    if not rest:
        raise ConfigError(f"{ref!r}: give ollama:NAME, lmstudio:PUBLISHER/REPO/FILE.gguf or hf:OWNER/NAME[/FILE.gguf].")
    if kind == "ollama":
        return resolve_ollama(rest)
    if kind == "lmstudio":
        return resolve_lmstudio(rest)
    if kind == "hf":
        return resolve_hf(rest)
    raise ConfigError(f"{ref!r}: unknown source {kind!r}; use ollama:, lmstudio: or hf:.")


def suggested_id(ref: str) -> str:
    """A model id for a reference: ``ollama:llama3.2:1b`` -> ``llama3.2-1b``, ``hf:HuggingFaceTB/SmolLM2-135M``
    -> ``smollm2-135m``, a GGUF file -> its name without ``.gguf``."""
    kind, _, rest = ref.partition(":")
    if kind == "ollama":
        base, _, tag = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
        text = f"{base.rsplit('/', 1)[-1]}-{tag}"
    else:
        last = rest.rstrip("/").rsplit("/", 1)[-1]
        text = last[: -len(".gguf")] if last.lower().endswith(".gguf") else last
    text = re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-._")
    return (text or "model")[:64]
