#!/usr/bin/env bash
# Continue the published study in study/paper: every run of the shipped experiment files that is not
# finished there yet (finished runs are skipped, interrupted ones resume), the cheap LeNet-300-100 runs first,
# then the paper's experiments and the ablations at the paper profile (Fig. 8 first: its LeNet-5 retraining is
# the paper's instability finding; then the ablation of its retraining's initialisation; LeNet-5's Fig. 9, then its dynamic sparse training on MNIST), then the ResNet-20
# extension at its quick profile (30 epochs), then the report. Safe to stop (kill) and start again at any
# point. Commit what finished with study/stage.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export SPARSETOPO_DATA="${SPARSETOPO_DATA:-../shared/data}"
out=study/paper
failed=()  # a sweep with failed runs does not stop the study: the next experiments still run
paper=(fig7 fig9 lr ablation_layers ablation_schedule ablation_radix dst ablation_dst dst_pruned ablation_init ablation_scope
       ablation_source ablation_ticket)
for exp in "${paper[@]}"; do
    sparsetopo sweep "$exp" --profile paper --out "$out" --only model=lenet300 || failed+=("$exp")
done
for exp in fig8 ablation_fig8_init fig7 ablation_layers_lenet5; do
    sparsetopo sweep "$exp" --profile paper --out "$out" || failed+=("$exp")
done
# Fig. 9's LeNet-5 on both datasets, x100 (the network the paper could not train) included (about 7
# CPU-hours, `sweep fig9 --dry-run --probe`), LeNet-5's learning rates (Fig. 8's second axis, about 2.4) and
# the stalled dense-init runs at a higher rate (about 0.8),
# then dynamic sparse training of LeNet-5 on MNIST (about 3.6)
sparsetopo sweep fig9 --profile paper --out "$out" --only model=lenet5 || failed+=(fig9)
sparsetopo sweep lr --profile paper --out "$out" || failed+=(lr)
sparsetopo sweep ablation_fig8_init --profile paper --out "$out" || failed+=(ablation_fig8_init)  # its lr 0.3 stage
sparsetopo sweep dst --profile paper --out "$out" --only dataset=mnist || failed+=(dst)
for exp in fig9 lr ablation_layers ablation_schedule ablation_radix dst ablation_dst dst_pruned ablation_init ablation_scope; do
    sparsetopo sweep "$exp" --profile paper --out "$out" || failed+=("$exp")
done
sparsetopo sweep fig9_resnet --profile quick --out "$out" || failed+=(fig9_resnet)
sparsetopo report "$out" --out "$out/report"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "continue.sh: runs failed in: ${failed[*]} (see each sweep's output; a rerun retries them)" >&2
    exit 1
fi
