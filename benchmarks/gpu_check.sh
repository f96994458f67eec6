#!/usr/bin/env bash
# The CUDA path in one script (issue 14), sized to finish in under 5 minutes on one GPU so it can run twice in a lease:
# install, the tests that exercise CUDA, train / finetune / evaluate / --compile through the CLI, torchrun with nccl
# where the machine has two GPUs, and the GPU speed benchmarks against the idiomatic loop.
#
#   bash benchmarks/gpu_check.sh                  # on a machine with an NVIDIA GPU
#   bash benchmarks/gpu_check.sh --device cpu     # dry run of every step on the CPU, with the smallest sizes
#
# Every step runs even when an earlier one failed; the summary (results/gpu_check/summary.md, or $GPU_CHECK_OUT) lists
# each step's status, seconds and last line, and the exit status is the number of failed steps.
# Install: `make install` where a .venv can be built from the package registry; on a machine with no network (a GPU
# lease) the package is installed without dependencies into the python3 that already holds torch, with any wheels
# carried in .whl/ (for packages that python3 lacks) installed first.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
if [ "${1:-}" = "--device" ]; then DEVICE=${2:?--device takes cpu or cuda}; fi
case $DEVICE in cpu|cuda) ;; *) echo "gpu_check.sh: bad --device '$DEVICE': choose cpu or cuda" >&2; exit 2 ;; esac
DEST=${GPU_CHECK_OUT:-results/gpu_check}
rm -rf "$DEST" && mkdir -p "$DEST/logs"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=0
printf '| step | status | seconds | last line |\n|---|---|---:|---|\n' >"$DEST/summary.md"

step() {  # step NAME COMMAND...: run it, log it, time it, never stop the script
    local name=$1 start end status rc
    shift
    start=$(date +%s.%N)
    echo "== $name: $*" | tee "$DEST/logs/$name.log"
    "$@" >>"$DEST/logs/$name.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    if [ $rc = 0 ]; then status=ok; else status="FAILED (exit $rc)"; FAILED=$((FAILED + 1)); fi
    local last seconds
    last=$(grep -v '^\s*$' "$DEST/logs/$name.log" | tail -1 | tr '|' '/' | cut -c1-160)
    seconds=$(awk "BEGIN { printf \"%.1f\", $end - $start }")
    printf '| %s | %s | %s | %s |\n' "$name" "$status" "$seconds" "$last" >>"$DEST/summary.md"
    echo "   $name: $status ($seconds s)"
}

install() {
    if [ -x .venv/bin/python ] || timeout 30 python3 -m pip download --no-deps --quiet --retries 0 --timeout 5 \
        -d "$WORK/probe" pip==24.0 >/dev/null 2>&1; then
        make install && echo "installed with make install (.venv)"
    else
        if compgen -G ".whl/*.whl" >/dev/null; then
            python3 -m pip install --quiet --no-index --no-deps --no-compile .whl/*.whl || return 1
        fi
        python3 -m pip install --quiet --no-index --no-deps --no-build-isolation -e . || return 1
        echo "no package registry reachable: installed without dependencies into $(command -v python3)"
    fi
}

# ---- install and environment
step install install
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
CNNBENCH=("$PY" -m cnnbench)
step environment "$PY" -c "
import torch, torchvision, cnnbench.cli
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)
print('GPUs:', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or 'none')
assert '$DEVICE' == 'cpu' or torch.cuda.is_available(), 'torch sees no GPU'"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)

# ---- the tests that exercise the CUDA path (tests/test_cuda.py skips itself without a GPU), with the training,
# fine-tuning and evaluation suites beside them, their device left at auto so that they run on the GPU where there is one
PARALLEL=()
if [ "$DEVICE" = cuda ] && "$PY" -c "import xdist" 2>/dev/null; then PARALLEL=(-n 16); fi
step tests timeout 120 "$PY" -m pytest -q -p no:cacheprovider --tb=short "${PARALLEL[@]}" tests/test_cuda.py \
    tests/test_train.py tests/test_finetune.py tests/test_step_path.py

# ---- the CLI as a user runs it
if [ "$DEVICE" = cuda ]; then EPOCHS=3; SIZE=64; else EPOCHS=1; SIZE=32; fi
COMMON=(--root "$WORK/data" --device "$DEVICE" --quiet --json)
step train-cifar-simple "${CNNBENCH[@]}" train --model cifar-simple --dataset shapes --size 32 --epochs "$EPOCHS" \
    --batch-size 128 --precision "$([ "$DEVICE" = cuda ] && echo bf16 || echo fp32)" --channels-last \
    --out "$WORK/runs/cifar" "${COMMON[@]}"
step train-fit-digits "${CNNBENCH[@]}" train --model fit:7500 --dataset digits --epochs "$EPOCHS" \
    --precision "$([ "$DEVICE" = cuda ] && echo bf16 || echo fp32)" --channels-last --out "$WORK/runs/fit" "${COMMON[@]}"
step finetune-cached "${CNNBENCH[@]}" finetune --backbone resnet18 --weights none --freeze all --cache-features \
    --dataset shapes --size "$SIZE" --epochs "$EPOCHS" --out "$WORK/runs/ft-cached" "${COMMON[@]}"
step finetune-uncached "${CNNBENCH[@]}" finetune --backbone resnet18 --weights none --freeze all --no-cache-features \
    --dataset shapes --size "$SIZE" --epochs 2 --out "$WORK/runs/ft-uncached" "${COMMON[@]}"
CIFAR_RUN=$(ls -d "$WORK"/runs/cifar/*/ 2>/dev/null | head -1)
step evaluate "${CNNBENCH[@]}" evaluate "${CIFAR_RUN:-missing-run}" --device "$DEVICE" --quiet --json
step compile "${CNNBENCH[@]}" train --model cifar-simple --dataset shapes --size 32 --epochs 2 --compile \
    --out "$WORK/runs/compile" "${COMMON[@]}"
if [ "$GPUS" -ge 2 ]; then
    step torchrun-nccl "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 -m cnnbench train \
        --model cifar-simple --dataset shapes --size 32 --epochs 2 --out "$WORK/runs/ddp" "${COMMON[@]}"
else
    echo "| torchrun-nccl | not run: this machine has $GPUS GPU(s), nccl needs 2 | 0 | |" >>"$DEST/summary.md"
fi

# ---- speed: engine vs the idiomatic loop (synthetic data), and time to accuracy on the shapes stand-in
if [ "$DEVICE" = cuda ]; then
    CASES=cifar-simple,resnet18-32,resnet18-224; TTA=(--seeds 1 --max-epochs 15)
else
    CASES=mnist-722; TTA=(--seeds 1 --max-epochs 1)
fi
step train-speed timeout 150 "$PY" benchmarks/train_speed.py --device "$DEVICE" --cases "$CASES" --out "$DEST"
step time-to-accuracy timeout 60 "$PY" benchmarks/time_to_accuracy.py --dataset shapes --size 32 --model cifar-simple \
    --target 0.8 --batch-size 128 --lr 1e-3 --device "$DEVICE" --out "$DEST/time_to_accuracy.md" "${TTA[@]}"

(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv) \
    >"$DEST/logs/nvidia-smi.log" 2>&1
tar -czf "$DEST/logs.tar.gz" -C "$DEST" logs
echo
cat "$DEST/summary.md"
echo "failed steps: $FAILED"
exit "$FAILED"
