#!/usr/bin/env bash
# Launch (GPU machine, repo root): bash benchmarks/gpu_check.sh        # one GPU, about 5-8 minutes
# CPU smoke of every section:      bash benchmarks/gpu_check.sh --tiny --device cpu
#
# Flash-path correctness on CUDA, Llama-3-8B-shaped throughput at 24k (LongRecipe positions, paper Table 4 RoPE)
# and the longest sample that trains on one GPU; see benchmarks/gpu_check.py. Needs only torch, transformers and
# lightning: if a folder .whl/ of wheels was carried along (e.g. a newer transformers + kernels), they are
# installed to a scratch folder first. Each section has its own time cap, so one hang cannot eat the budget.
# Results: JSON lines on stdout and in ${OUT:-outputs/gpu_check}/gpu_check.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/longrecipe-site \
    .whl/*.whl && export PYTHONPATH="/tmp/longrecipe-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
out="${OUT:-outputs/gpu_check}"
mkdir -p "$out"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
rc=0
timeout "${CORRECTNESS_TIMEOUT:-150}" python3 benchmarks/gpu_check.py --sections correctness --out "$out/gpu_check.jsonl" "$@" || rc=$?
timeout "${PERF_TIMEOUT:-330}" python3 benchmarks/gpu_check.py --sections throughput,max_length --out "$out/gpu_check.jsonl" "$@" || rc=$?
exit "$rc"
