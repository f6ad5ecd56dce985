#!/usr/bin/env bash
# The GPU kit's entry point (built by `cargo xtask gpu-kit`; docs/gpu.md). For a GPU host with
# Python, torch (the LibTorch release the binaries were built against) and transformers, and no
# Rust toolchain. It
#   1. finds the host's LibTorch and NVIDIA libraries through `python3 -c 'import torch'`;
#   2. writes random weights of the embedded model's shapes, and of a 1.7B-shaped Llama, from the
#      carried configs and tokenizer (make_weights.py, transformers' initialisation);
#   3. runs the GPU tests (a skipped test is a failure here: ALIGNER_REQUIRE_GPU=1);
#   4. runs our benchmarks and transformers' (eager) on the same weights, one after the other;
#   5. prints one summary (summary.py), also written to $WORK/summary.md.
#
#   ./run.sh                  everything, on cuda:0
#   STEPS=tests ./run.sh      only the tests (STEPS: any of weights,tests,bench,summary)
#   DEVICE=cpu ./run.sh       a dry run on a machine without a GPU (small shapes, no 1.7B model)
#   PYTHON=/path/python3 WORK=/tmp/kit ./run.sh
set -uo pipefail
kit=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
WORK=${WORK:-$kit/work}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-weights,tests,bench,summary}
mkdir -p "$WORK"
step() { [[ ",$STEPS," == *",$1,"* ]]; }

torch_lib=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') \
    || { echo "run.sh: $PYTHON cannot import torch"; exit 1; }
version=$("$PYTHON" -c 'import torch; print(torch.__version__.split("+")[0])')
want=$(cat "$kit/LIBTORCH_VERSION")
if [[ "$version" != "$want" ]]; then
    echo "run.sh: the binaries were built against LibTorch $want, but $PYTHON has torch $version"
    exit 1
fi
site=${torch_lib%/torch/lib}
libs=$torch_lib
for d in cu13 cudnn nccl cusparselt nvshmem; do
    [[ -d "$site/nvidia/$d/lib" ]] && libs="$libs:$site/nvidia/$d/lib"
done
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LIBTORCH=${torch_lib%/lib}
echo "LibTorch $version at $LIBTORCH; device $DEVICE; results in $WORK"

models=(smollm2-135m)
[[ "$DEVICE" == cpu ]] || models+=(llama-1.7b)
status=0

if step weights; then
    "$PYTHON" "$kit/make_weights.py" "$kit/models/smollm2-135m" "$WORK/smollm2-135m" --dtype float32 || exit 1
    if [[ "$DEVICE" != cpu ]]; then
        "$PYTHON" "$kit/make_weights.py" "$kit/models/llama-1.7b" "$WORK/llama-1.7b" --dtype bfloat16 || exit 1
    fi
fi

if step tests; then
    [[ "$DEVICE" == cpu ]] || export ALIGNER_REQUIRE_GPU=1
    echo "== GPU tests"
    ALIGNER_GPU_MODEL_DIR="$WORK/smollm2-135m" "$kit/bin/gpu_tests" --test-threads 1 --nocapture \
        > "$WORK/tests.log" 2>&1
    tests=$?
    grep -E "^test |test result|skipped|panicked" "$WORK/tests.log"
    [[ $tests == 0 ]] || { echo "GPU tests failed (exit $tests): $WORK/tests.log"; status=1; }
fi

if step bench; then
    if [[ "$DEVICE" == cpu ]]; then
        shapes=4x64
        batches=4
        precisions=f32
    else
        shapes=4x256,16x1024
        batches=32
        precisions=f32,bf16
    fi
    for model in "${models[@]}"; do
        dir="$WORK/$model"
        if [[ "$model" == smollm2-135m ]]; then
            dtypes=$precisions
        else
            dtypes=bf16
        fi
        echo "== $model: ours"
        "$kit/bin/bench_model" --model-dir "$dir" --device "$DEVICE" --dtypes "$dtypes" --packed \
            --json "$WORK/ours-$model.json" || status=1
        echo "== $model: transformers"
        train=(--train-shapes "$shapes")
        [[ "$model" == smollm2-135m ]] || train=(--skip-train)
        "$PYTHON" "$kit/transformers_bench.py" "$dir" --device "$DEVICE" --dtypes "$dtypes" \
            --decode-batches "$batches" "${train[@]}" --json "$WORK/transformers-$model.json" \
            > /dev/null || status=1
        if [[ "$model" == smollm2-135m ]]; then
            echo "== $model: training, ours"
            "$kit/bin/bench_train" --model-dir "$dir" --device "$DEVICE" --precision "$precisions" \
                --shapes "$shapes" --json "$WORK/train-$model.json" > /dev/null || status=1
        fi
    done
fi

if step summary; then
    "$PYTHON" "$kit/summary.py" "$WORK" | tee "$WORK/summary.md"
fi
exit $status
