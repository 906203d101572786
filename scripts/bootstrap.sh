#!/usr/bin/env bash
# Create .venv in the project root and install the project (CPU torch 2.13.0) when missing or when
# pyproject.toml changed since the last install. Safe to run repeatedly; sourced by the other scripts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.installed-pyproject.sha256"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[bootstrap] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
  echo "[bootstrap] installing the project and its dependencies into .venv (first run: a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # torch==2.13.0 first: the CPU wheel; a bare `torch` requirement would pull a multi-GB CUDA build
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]"
  echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"  # as `activate` does: dg checks that the active environment is the project's
export DAGSTER_HOME="${DAGSTER_HOME:-$ROOT/data/dagster_home}"
mkdir -p "$DAGSTER_HOME"
cp "$ROOT/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false
