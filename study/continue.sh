#!/usr/bin/env bash
# Continue the published study in study/paper: every run of the shipped experiment files at the paper
# profile that is not finished there yet (finished runs are skipped, interrupted ones resume), cheapest
# model first, then the report. Safe to stop (kill) and start again at any point.
set -euo pipefail
cd "$(dirname "$0")/.."
export SPARSETOPO_DATA="${SPARSETOPO_DATA:-../shared/data}"
export OMP_WAIT_POLICY=PASSIVE   # runs side by side share the cores instead of spin-waiting on each other
out=study/paper
for exp in fig7 fig9 lr; do
    sparsetopo sweep "$exp" --profile paper --out "$out" --only model=lenet300
done
sparsetopo reproduce all --profile paper --out "$out"
