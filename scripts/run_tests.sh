#!/usr/bin/env bash
# Set up (if needed) and run the test suite. .ci/run calls exactly this.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
export DAGSTER_HOME="$(mktemp -d)"  # tests never touch the user's instance
cp "$ROOT/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
python -m pytest "$@"
