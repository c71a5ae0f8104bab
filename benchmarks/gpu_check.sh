#!/usr/bin/env bash
# The GPU part of the speed work, prepared to run as one command on a CUDA machine
# (about 6 minutes on one H200); it writes its logs to $OUT (or ./gpu_check).
#
#   1. tests/test_cuda.py: the fused ELBO equals Pyro's on the GPU, and an epoch of
#      training synchronises with the host once per check, not once per step;
#   2. benchmarks/vae_throughput.py on full-size data (60000 rows) at batch 128 and
#      1024: every route's seconds per epoch, examples per second and ratio to plain
#      PyTorch (bfloat16 mixed precision, torch.compile, its CUDA-graph mode and fit's compile=on
#      included), then the test ELBO of fit (float32, bfloat16) vs the plain loop
#      after 10 epochs.
#
# Where Pyro is not installed (the workplace's GPU image), carry its wheels, made with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       pyro-ppl==1.9.2 pyro-api==0.1.2
# and this script installs them from .whl/ first.
set -uo pipefail
out=${OUT:-gpu_check}
mkdir -p "$out"
python=${PYTHON:-python3}
if ! "$python" -c "import pyro" 2>/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
timeout 120 "$python" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/cuda_tests.txt"
cd benchmarks && timeout 420 "$python" vae_throughput.py --device cuda --train-size 60000 \
    --batch-sizes 128,1024 --repeats 3 --compile --quality-seeds 0 --example-epochs 0 2>&1 \
    | tee "../$out/gpu_throughput.txt"
