#!/usr/bin/env bash
# One-GPU smoke check (≤ 8 min): HF vs vLLM rollout tokens/s, GRPO steps with rollout=vllm and their
# Pass@k, a 2-trial fractional-GPU sweep, a 2-worker NCCL trial. Writes bench/results/gpu-<date>.json.
# Needs a CUDA GPU, your own CUDA torch, and `pip install -e '.[gpu,test]'`.
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1
exec timeout 480 python -m bench.gpu_smoke "$@"
