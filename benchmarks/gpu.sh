#!/usr/bin/env bash
# Issue 22's GPU checks as one prepared script: the round engines at 1,000 and 10,000 clients on CUDA
# (benchmarks/scale_bench.py, wall seconds, loop and vmap in the same run) and the audit's vmap backend.
#
#     benchmarks/gpu.sh            # PYTHON=... to use another interpreter (it needs a CUDA build of torch)
#
# Output: one JSON line per (strategy, clients, engine) and a table; then the audit benchmark's lines.
# Under 10 minutes on one H100 (FedAvg and MOON; the loop at 10,000 clients is the long part).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} FEDMM_HOME=${FEDMM_HOME:-$(mktemp -d)}
if ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu.sh: $PYTHON has no CUDA device (torch.cuda.is_available() is false)" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for config in configs/default.yaml configs/tiny.yaml; do
    "$PYTHON" benchmarks/scale_bench.py --device cuda --threads 4 --config "$config" --clients 1000 10000 \
        --strategies fedavg moon --audit-up-to 1000
done
"$PYTHON" benchmarks/audit_bench.py --backend vmap --clients 10 16 --rounds 1 --seeds 1 --threads 4
