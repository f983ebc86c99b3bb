#!/usr/bin/env bash
# GPU check on a machine with JAX but no TensorFlow or MLflow (the lent H200): installs the carried
# wheels (.whl/: keras, namex, optree), runs benchmarks/gpu_check.py with KERAS_BACKEND=jax.
#   bash benchmarks/gpu_check.sh            on the GPU machine; data from .gpu/mnist.npz, output in $OUT
#   bash benchmarks/gpu_check.sh --cpu      dry run here: tiny preset at 1 G step, a few steps, the .venv's JAX, and
#                                           2 virtual CPU devices for the data-parallel step
set -euo pipefail
cd "$(dirname "$0")/.."
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT="${OUT:-$(mktemp -d)}"
DATA="${DATA:-.gpu/mnist.npz}"
if [[ "${1:-}" == "--cpu" ]]; then
  PYTHON=.venv/bin/python
  DATA="${DATA_CPU:-${MNIST_GAN_TEST_DATA:?set MNIST_GAN_TEST_DATA (or DATA_CPU) to a local mnist.npz}}"
  export JAX_PLATFORMS=cpu XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
else
  PYTHON=python3
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" benchmarks/gpu_check.py --data "$DATA" --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
