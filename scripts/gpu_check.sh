#!/usr/bin/env bash
# The GPU paths no CI machine runs, one short step each, one line per step with its figure; stops at the first
# failure, naming the step (exit 1). On a machine without a CUDA GPU it says so and exits 0: nothing was checked.
#
#   bash scripts/gpu_check.sh                  # from the repository root, in the project's environment
#   GPU_CHECK_DRY_RUN=1 bash scripts/gpu_check.sh   # print the commands instead (no GPU needed)
#
# Steps: one epoch of the digits recipe on one GPU with --amp bf16, --amp fp16, --channels-last and --compile;
# one epoch on every GPU of the machine through torchrun; eval (bf16) of the GPU-trained run; its ONNX export
# (checked against PyTorch on the CPU); the batch-1 CUDA latency of SwiftFormer-XS (swiftformer bench --backends
# cuda). The digits ship with scikit-learn: no download. Logs go to $GPU_CHECK_DIR (default: a new temp folder).
set -uo pipefail

PYTHON=${PYTHON:-python3}
DRY_RUN=${GPU_CHECK_DRY_RUN:-}
OUT=${GPU_CHECK_DIR:-}
TRAIN=(train --config demo_digits --dataset digits --img-size 32 --epochs 1 --batch-size 64 --no-progress
       --device cuda --overwrite)

if [[ -z $DRY_RUN ]]; then
    if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing checked"
        exit 0
    fi
    GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
    OUT=${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}
    echo "gpu_check: $GPUS x $("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))"), torch" \
         "$("$PYTHON" -c "import torch; print(torch.__version__)")", logs in "$OUT"
else
    GPUS=2 OUT=${OUT:-OUT}
fi

# step NAME PATTERN COMMAND...: run COMMAND, print the last line of its output matching PATTERN (the figure)
step() {
    local name=$1 pattern=$2
    shift 2
    if [[ -n $DRY_RUN ]]; then
        echo "$*"
        return
    fi
    local log="$OUT/$name.log" start=$SECONDS
    if ! "$@" >"$log" 2>&1; then
        echo "gpu_check: FAILED at step $name ($*); the end of $log:"
        tail -n 15 "$log"
        exit 1
    fi
    echo "gpu_check: $name ok in $((SECONDS - start)) s: $(grep -E "$pattern" "$log" | tail -n 1)"
}

SF=("$PYTHON" -m swiftformer)
EPOCH='^epoch 1/1'
step train-amp-bf16 "$EPOCH" "${SF[@]}" "${TRAIN[@]}" --amp bf16 --output-dir "$OUT/bf16"
step train-amp-fp16 "$EPOCH" "${SF[@]}" "${TRAIN[@]}" --amp fp16 --output-dir "$OUT/fp16"
step train-channels-last "$EPOCH" "${SF[@]}" "${TRAIN[@]}" --channels-last --output-dir "$OUT/channels_last"
step train-compile "$EPOCH" "${SF[@]}" "${TRAIN[@]}" --compile --output-dir "$OUT/compile"
step "train-torchrun-${GPUS}gpu" "$EPOCH" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$GPUS" \
    -m swiftformer "${TRAIN[@]}" --output-dir "$OUT/ddp"
step eval-bf16 '^top-1' "${SF[@]}" eval --checkpoint "$OUT/bf16/best.pth" --device cuda --amp bf16
step export-onnx '^check:' "${SF[@]}" export --checkpoint "$OUT/bf16/best.pth" --format onnx \
    --out "$OUT/xs.onnx"
step bench-cuda '^swiftformer_xs +cuda' "${SF[@]}" bench --models swiftformer_xs --backends cuda --rounds 5
[[ -n $DRY_RUN ]] || echo "gpu_check: all steps passed"
