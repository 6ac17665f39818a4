#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one call of about 8 minutes, from the repository root of a copy of
# the working tree on the GPU machine:
#   1. install the package (no downloads: its dependencies must be there already);
#   2. the CUDA tests (tests/test_gpu.py and the CUDA test of tests/test_training.py);
#   3. benchmarks/bench_gpu.py: one layer dense / masked / sparse, LeNet-5 and LeNet-5 x10 / x100 steps;
#   4. LeNet-5 on MNIST, 12,000 steps (the paper's budget) on the GPU, timed, and three 12,000-step dense
#      LeNet-300-100 seeds, to set beside the published CPU runs (study/paper: seeds agree within noise?);
#   5. a slice of the study at the quick profile on the GPU (Fig. 7's LeNet-300-100), timed, for the estimate
#      of `reproduce all --profile paper` on one GPU.
# MNIST is read from $DATA (default .device-data, holding mnist/ as laid out in the data README).
# Results go to $OUT (default device-out): at most 8 files.
#
#   OUT=device-out DATA=.device-data bash benchmarks/device_check.sh
set -uo pipefail
out="${OUT:-device-out}"
data="${DATA:-.device-data}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 SPARSETOPO_DATA="$data"
started=$SECONDS
stamp() { echo "== $1 at +$((SECONDS - started)) s" | tee -a "$out/env.txt"; }

stamp install
{ nvidia-smi; python3 -c "import torch, numba; print(torch.__version__, torch.version.cuda, numba.__version__)"; } \
    >> "$out/env.txt" 2>&1
if ! python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >> "$out/env.txt" 2>&1; then
    echo "pip install failed: running from src/ instead" | tee -a "$out/env.txt"
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -c "import sparsetopo; print('sparsetopo from', sparsetopo.__file__)" >> "$out/env.txt" 2>&1 || exit 1

stamp tests
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py \
    "tests/test_training.py::test_a_cuda_run_trains_with_resident_data_and_its_checkpoint_loads_on_the_cpu" \
    > "$out/tests.log" 2>&1
echo "tests rc=$?" | tee -a "$out/env.txt"
tail -3 "$out/tests.log"

stamp bench_gpu
timeout 150 python3 benchmarks/bench_gpu.py --json "$out/bench_gpu.json" --markdown "$out/bench_gpu.md" \
    > "$out/bench_gpu.log" 2>&1
echo "bench_gpu rc=$?" | tee -a "$out/env.txt"

stamp runs
runs=/tmp/device-runs
rm -rf "$runs"
t0=$SECONDS
timeout 150 python3 -m sparsetopo train --model lenet5 --dataset mnist --steps 12000 --seed 0 --device cuda --quiet \
    --out "$runs/lenet5-s0" >> "$out/runs.log" 2>&1
echo "lenet5 12000 steps on cuda: rc=$? wall $((SECONDS - t0)) s" | tee -a "$out/env.txt"
for seed in 0 1 2; do
    timeout 60 python3 -m sparsetopo train --model lenet300 --dataset mnist --steps 12000 --seed "$seed" --device cuda \
        --quiet --out "$runs/lenet300-s$seed" >> "$out/runs.log" 2>&1
done
python3 - "$runs" > "$out/runs.json" <<'EOF'
import json, sys
from pathlib import Path
keys = ("final_test_accuracy", "wall_seconds", "device", "status")
print(json.dumps({p.parent.name: {k: json.loads(p.read_text()).get(k) for k in keys}
                  for p in sorted(Path(sys.argv[1]).glob("*/summary.json"))}, indent=1))
EOF
cat "$out/runs.json"

stamp sweep_slice
t0=$SECONDS
timeout 120 python3 -m sparsetopo sweep fig7 --profile quick --only model=lenet300 --device cuda --jobs 4 \
    --out /tmp/device-slice >> "$out/runs.log" 2>&1
echo "fig7 quick lenet300 slice on cuda: rc=$? wall $((SECONDS - t0)) s" | tee -a "$out/env.txt"
python3 -m sparsetopo sweep fig7 --profile quick --only model=lenet300 --device cuda --out /tmp/device-slice --dry-run \
    >> "$out/runs.log" 2>&1
stamp done
