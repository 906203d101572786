#!/usr/bin/env bash
# Set up (if needed) and run the whole pipeline on the embedded default: the three chat sources from
# the local mirror (THREAD_EMBED_MIRROR, default ../shared/datasets), all-MiniLM-L6-v2, CPU.
# Extra arguments go to `dg launch`, e.g. `-c configs/full_recipe.yaml` (`dagster job execute -m
# thread_embed_pipeline.definitions -j thread_embed_job` still works the same).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
start=$(date +%s)
dg launch --job thread_embed_job "$@"
echo
echo "main job finished in $(( $(date +%s) - start )) s"
python -m thread_embed_pipeline.orchestration.summary
