#!/usr/bin/env bash
# Stage the published files of every finished run of the study for a commit (runs still in progress are
# left out): experiments.json, and per finished run hparams.json, summary.json, metrics.jsonl, topology.npz,
# connectivity.json (dynamic sparse training) and restored.json (weights a sweep trained again).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-study/paper}"
git add "$out/experiments.json"
for run in "$out"/runs/*/; do
    summary="$run/summary.json"
    [ -f "$summary" ] || continue
    grep -qE '"status": "(completed|diverged)"' "$summary" || continue
    for f in hparams.json summary.json metrics.jsonl topology.npz connectivity.json restored.json; do
        if [ -f "$run/$f" ]; then git add "$run/$f"; fi
    done
done
