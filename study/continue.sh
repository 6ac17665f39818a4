#!/usr/bin/env bash
# Continue the published study in study/paper: every run of the shipped experiment files at the paper
# profile that is not finished there yet (finished runs are skipped, interrupted ones resume), the cheap
# LeNet-300-100 runs first, then everything, then the report. Safe to stop (kill) and start again at any
# point. Commit what finished with study/stage.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export SPARSETOPO_DATA="${SPARSETOPO_DATA:-../shared/data}"
out=study/paper
for exp in fig7 fig9 lr ablation_layers ablation_schedule ablation_radix dst; do
    sparsetopo sweep "$exp" --profile paper --out "$out" --only model=lenet300
done
sparsetopo reproduce all --profile paper --out "$out"
