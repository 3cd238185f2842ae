#!/usr/bin/env bash
# Set up (idempotent) and run the default test suite (fast; `-m slow` for end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 -q "$@"
