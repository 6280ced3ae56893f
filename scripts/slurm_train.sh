#!/bin/bash
# Multi-node SwiftFormer training under SLURM: one torchrun per node, which starts one process per GPU.
#
#   sbatch --nodes=2 scripts/slurm_train.sh --config swiftformer_xs --data /data/imagenet --output-dir runs/xs
#
# 2 nodes x 8 GPUs x batch 128 = 2048 images per update, the official recipe's effective batch (the file says
# 16 GPUs x 128). With a job time limit, add `--stop-after N` and resubmit with `--resume runs/xs/last.pth`.
#SBATCH --job-name=swiftformer
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

GPUS_PER_NODE=${GPUS_PER_NODE:-8}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${PORT:-29500}
export OMP_NUM_THREADS=$((SLURM_CPUS_PER_TASK / GPUS_PER_NODE))

srun torchrun \
    --nnodes="$SLURM_JOB_NUM_NODES" \
    --nproc_per_node="$GPUS_PER_NODE" \
    --rdzv-id="$SLURM_JOB_ID" \
    --rdzv-backend=c10d \
    --rdzv-endpoint="$HEAD_NODE:$PORT" \
    -m swiftformer train --workers $((OMP_NUM_THREADS)) "$@"
